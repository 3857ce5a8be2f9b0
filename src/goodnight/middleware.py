"""Request ids, the per-request log line and the request boundary, as plain ASGI middleware (no per-request
task or body copy).

The boundary: whatever escapes the app is answered here with the 500 envelope and logged once, on the
request's own log line, instead of reaching Starlette's ServerErrorMiddleware, which re-raises after
answering; uvicorn would then log a second, plain-text traceback and close the keep-alive connection.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goodnight.errors import GoodnightError, send_error
from goodnight.kit.ids import new_id

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


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id_from(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
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
            # Path only, never the query string or headers: tokens and passwords must not reach the logs.
            logger.log(
                logging.INFO if failure is None else logging.ERROR,
                "request" if failure is None else "request failed",
                exc_info=failure,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": 500 if status is None else status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "request_id": request_id,
                    "user_id": state.get("user_id"),
                },
            )
