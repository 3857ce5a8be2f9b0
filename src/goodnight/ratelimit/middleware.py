"""Rate limits on every request, as plain ASGI middleware: one policy per request, chosen before any work.

Logins and sign-ups count per client address; any other request counts per user when it carries a valid
token and per address when it does not. The paths the app names exempt (health checks, the API docs) are
never limited: load balancers and orchestrators poll them, and refusing them would take healthy servers out
of rotation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goodnight.auth.tokens import Tokens
from goodnight.errors import RateLimited, Unauthorized, send_error
from goodnight.observability import metrics
from goodnight.ratelimit.limiter import RateLimiter
from goodnight.ratelimit.policies import Policy
from goodnight.ratelimit.verdict import Verdict


class AppServices(Protocol):
    """What this reads of the app's services, which are built at start-up, after the middleware."""

    @property
    def rate_limiter(self) -> RateLimiter: ...

    @property
    def tokens(self) -> Tokens: ...


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, as FastAPI's HTTPBearer reads it."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_prefix: str,
        exempt_paths: Iterable[str] = (),
        exempt_prefixes: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.login_path = f"{api_prefix}/auth/login"
        self.signup_path = f"{api_prefix}/users"
        self.exempt_paths = frozenset(exempt_paths)
        self.exempt_prefixes = tuple(exempt_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        services: AppServices = scope["app"].state.services
        policy, key = self._policy_for(scope, services)
        verdict = await services.rate_limiter.hit(policy, key)
        if not verdict.allowed:
            metrics.rate_limited(policy.name)
            await send_error(scope, receive, send, RateLimited(headers=verdict.header_dict()))
            return
        await self.app(scope, receive, _with_headers(send, verdict))

    def _exempt(self, path: str) -> bool:
        return path in self.exempt_paths or path.startswith(self.exempt_prefixes)

    def _policy_for(self, scope: Scope, services: AppServices) -> tuple[Policy, str]:
        limiter = services.rate_limiter
        policies = limiter.policies
        if scope["method"] == "POST":
            if scope["path"] == self.login_path:
                return policies.login_ip, limiter.client_address.of(scope)
            if scope["path"] == self.signup_path:
                return policies.signup, limiter.client_address.of(scope)
        token = bearer_token(scope)
        if token is not None:
            try:
                # The verification cache makes this free for a token seen before; the route's own check
                # then hits the same cache.
                return policies.user, str(services.tokens.verify(token))
            except Unauthorized:
                pass  # an invalid token is no token: the route answers 401, counted per address
        return policies.anonymous, limiter.client_address.of(scope)


def _with_headers(send: Send, verdict: Verdict) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            # A route refused by a stricter policy of its own (a locked username) keeps that policy's figures.
            # Starlette writes header names in lower case.
            if not any(name == b"ratelimit-limit" for name, _ in headers):
                message["headers"] = headers + verdict.headers
        await send(message)

    return send_with_headers
