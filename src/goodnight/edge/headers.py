"""Response headers every client gets, and cross-origin access for the browser apps an operator allows."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goodnight.errors import envelope

# On every response: browsers must not guess a content type (a JSON body sniffed as HTML is an XSS), and no
# address of ours leaks to other sites through the Referer header.
EVERY_RESPONSE = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
# API responses carry people's data and tokens: no browser or shared cache may keep a copy.
API_RESPONSE = [(b"cache-control", b"no-store")]
API_PATHS = "/api/"


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = EVERY_RESPONSE + API_RESPONSE if scope["path"].startswith(API_PATHS) else EVERY_RESPONSE

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# What a browser app may send and read. Tokens travel in Authorization, never in cookies, so credentials
# (cookies) are not allowed cross-origin.
CORS_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
CORS_REQUEST_HEADERS = ["Authorization", "Content-Type", "X-Request-ID"]
CORS_EXPOSED_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
]
CORS_MAX_AGE_SECONDS = 600


class CorsMiddleware(CORSMiddleware):
    """Starlette's CORS for the origins in ``GOODNIGHT_CORS_ORIGINS``, exact matches only.

    Two differences: a request from any other origin passes through untouched, with no CORS header at all (a
    refused preflight is then the API's own 405); and an allowed origin's preflight asking for a method or
    header we do not allow is refused in the error envelope rather than as plain text.
    """

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=CORS_MAX_AGE_SECONDS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or not self.is_allowed_origin(origin):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            response = self.preflight_response(request_headers=headers)
            if response.status_code >= 400:
                request_id = scope.get("state", {}).get("request_id", "")
                message = "This cross-origin request asks for a method or header the API does not allow."
                response.body = envelope("cors_not_allowed", message, request_id)
                response.headers["content-type"] = "application/json"
                response.headers["content-length"] = str(len(response.body))
            await response(scope, receive, send)
            return
        await self.simple_response(scope, receive, send, request_headers=headers)
