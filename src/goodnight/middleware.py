"""Request ids, the per-request log line, the HTTP metrics and the request boundary, as plain ASGI middleware
(no per-request task or body copy).

The log line and the metrics name the route by its template (``/api/v1/users/{user_id}``); a path no route
matches, or a request the edge refused before routing, is ``unmatched``. The template, never the path: a
path holds ids, and each distinct label value would be a new series for good.

The boundary: whatever escapes the app is answered here with the 500 envelope and logged once, on the
request's own log line, instead of reaching Starlette's ServerErrorMiddleware, which re-raises after
answering; uvicorn would then log a second, plain-text traceback and close the keep-alive connection.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable

from fastapi.routing import iter_route_contexts
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goodnight.errors import GoodnightError, send_error
from goodnight.kit.ids import new_id
from goodnight.kit.request_context import request_id_var
from goodnight.observability.metrics import UNMATCHED, HttpRecorder, method_label
from goodnight.ratelimit.client_ip import ClientAddress

logger = logging.getLogger("goodnight.access")
# Every request body of this API is a small JSON object; refuse anything larger before reading it.
MAX_BODY_BYTES = 64 * 1024


class PayloadTooLarge(GoodnightError):
    status_code = 413
    code = "payload_too_large"
    default_message = f"Request bodies are limited to {MAX_BODY_BYTES} bytes."


class BodyTooLarge(HTTPException):
    """A body sent without Content-Length grew past the limit while streaming in.

    An ``HTTPException`` because FastAPI re-raises those from reading a body (anything else becomes a 400
    "error parsing the body"); the error handlers then answer 413 ``payload_too_large``.
    """

    def __init__(self) -> None:
        super().__init__(PayloadTooLarge.status_code, PayloadTooLarge.default_message)


# Echo a client's request id only if it is short and plain, so it cannot inject into logs or headers.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def _request_id_from(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _SAFE_REQUEST_ID.match(candidate):
                return candidate
            break
    return new_id().hex


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else MAX_BODY_BYTES + 1
    return 0


def _limited(receive: Receive) -> Receive:
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise BodyTooLarge()
        return message

    return receive_within_limit


class RouteTemplates:
    """The full template of the route a request matched (also when only its method did not).

    Routing leaves the matched route in ``scope["route"]``, but a route of an included router is the one
    declared there, whose own path lacks the prefixes it was included under; FastAPI's
    ``iter_route_contexts`` gives each route's full path. Routes are compared by identity (a Starlette
    route's equality compares paths, so routes are not hashable), and the table is made at the first
    request, once the app has every route.
    """

    def __init__(self) -> None:
        self._by_route: dict[int, str] | None = None

    def of(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        if self._by_route is None:
            every = iter_route_contexts(getattr(scope.get("app"), "routes", ()))
            self._by_route = {id(found.original_route): found.path or "" for found in every}
        template = self._by_route.get(id(route)) or getattr(route, "path", None)
        return template if isinstance(template, str) and template else UNMATCHED


class RequestContextMiddleware:
    """``quiet_paths`` (health and metrics probes, polled every few seconds) are logged at debug level;
    ``client_address`` names the client on the log line (the address after trusted proxies); ``metrics``
    records the HTTP series, or nothing when metrics are off."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        client_address: ClientAddress | None = None,
        quiet_paths: Iterable[str] = (),
        metrics: HttpRecorder | None = None,
    ) -> None:
        self.app = app
        self.client_address = client_address or ClientAddress(())
        self.quiet_paths = frozenset(quiet_paths)
        self.metrics = metrics
        self.templates = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id_from(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        context = request_id_var.set(request_id)  # for every logger, and the tasks this request starts
        started = time.perf_counter()
        if self.metrics is not None:
            self.metrics.started()
        status: int | None = None
        failure: Exception | None = None

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
            await send(message)

        try:
            if _declared_length(scope) > MAX_BODY_BYTES:
                await send_error(scope, receive, send_with_request_id, PayloadTooLarge())
            else:
                await self.app(scope, _limited(receive), send_with_request_id)
        except Exception as exc:
            failure = exc
            # Once the response has started there is nothing left to say; uvicorn closes the connection.
            if status is None:
                await send_error(scope, receive, send_with_request_id, GoodnightError())
        finally:
            seconds = time.perf_counter() - started
            final_status = 500 if status is None else status
            route = self.templates.of(scope)
            if self.metrics is not None:
                self.metrics.finished(method_label(scope["method"]), route, final_status, seconds)
            self._log(scope, route, final_status, seconds, failure)
            request_id_var.reset(context)

    def _log(self, scope: Scope, route: str, status: int, seconds: float, failure: Exception | None) -> None:
        if failure is not None:
            level = logging.ERROR
        else:
            level = logging.DEBUG if scope["path"] in self.quiet_paths else logging.INFO
        if not logger.isEnabledFor(level):
            return
        state = scope["state"]
        # Path only, never the query string or headers: tokens and passwords must not reach the logs.
        logger.log(
            level,
            "request" if failure is None else "request failed",
            exc_info=failure,
            extra={
                "method": scope["method"],
                "route": route,
                "path": scope["path"],
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "client_ip": self.client_address.of(scope),
                "request_id": state["request_id"],
                "user_id": state.get("user_id"),
            },
        )
