"""One error hierarchy and the one place that renders it.

Every failure leaves the API as ``{"error": {"code", "message", "details"?, "request_id"}}`` with a matching
status, including the ones FastAPI and Starlette raise themselves (unknown route, wrong method, bad JSON).
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from goodnight.db import is_database_unavailable

logger = logging.getLogger("goodnight.errors")


class GoodnightError(Exception):
    status_code: int = 500
    code: str = "internal_error"
    default_message: str = "Something went wrong on our side."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        self.details = details
        self.headers = headers
        super().__init__(self.message)


class BadRequest(GoodnightError):
    status_code = 400
    code = "bad_request"


class Unauthorized(GoodnightError):
    status_code = 401
    code = "unauthorized"
    default_message = "Authentication required: send a valid 'Authorization: Bearer <token>' header."


class NotFound(GoodnightError):
    status_code = 404
    code = "not_found"
    default_message = "Not found."


class Conflict(GoodnightError):
    status_code = 409
    code = "conflict"


class ValidationFailed(GoodnightError):
    status_code = 422
    code = "validation_error"
    default_message = "The request is not valid."


class RateLimited(GoodnightError):
    """Too many requests: carries ``Retry-After`` and the ``RateLimit-*`` headers."""

    status_code = 429
    code = "rate_limited"
    default_message = "Too many requests; slow down and try again later."


class ServiceUnavailable(GoodnightError):
    """A dependency (the database, most often) cannot serve this request right now; retrying soon may work."""

    status_code = 503
    code = "service_unavailable"
    default_message = "The service is temporarily unavailable; try again shortly."


class Overloaded(ServiceUnavailable):
    """This process is at capacity and refused the request at once instead of queueing it."""

    code = "overloaded"
    default_message = "The server is busy; try again shortly."


def retry_after(seconds: float) -> dict[str, str]:
    """The ``Retry-After`` header: whole seconds, at least one."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None
    request_id: str


class ErrorEnvelope(BaseModel):
    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the error envelope for each status a route can return.

    422 is always included: any query, path or body problem produces it; so are 429 (rate limits) and 503
    (overload, or the database away), which any route may answer.
    """
    return {
        status: {"model": ErrorEnvelope, "description": HTTPStatus(status).phrase}
        for status in sorted({*statuses, 422, 429, 503})
    }


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def envelope(code: str, message: str, request_id: str, details: Any = None) -> bytes:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    body["request_id"] = request_id
    return orjson.dumps({"error": body})


def render_error(request: Request, status: int, code: str, message: str, details: Any = None) -> Response:
    request_id = request_id_of(request)
    headers = {"X-Request-ID": request_id} if request_id else None
    content = envelope(code, message, request_id, details)
    return Response(content, status_code=status, headers=headers, media_type="application/json")


async def send_error(scope: Scope, receive: Receive, send: Send, error: GoodnightError) -> None:
    """Answer with ``error`` from ASGI middleware, which runs outside FastAPI's exception handlers."""
    response = await _goodnight_error(Request(scope, receive), error)
    await response(scope, receive, send)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


async def _goodnight_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GoodnightError)
    response = render_error(request, exc.status_code, exc.code, exc.message, exc.details)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # Our own 400s are GoodnightErrors; a bare 400 is FastAPI failing to parse the body (for example
        # JSON nested too deeply), which the contract answers like any other malformed JSON.
        return render_error(request, 422, "validation_error", "The request body could not be parsed as JSON.")
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"No route matches {request.method} {request.url.path}."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail) if exc.detail else HTTPStatus(exc.status_code).phrase
    response = render_error(request, exc.status_code, code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [_describe(error) for error in exc.errors()]
    if any(problem["type"] == "json_invalid" for problem in problems):
        message = "The request body is not valid JSON."
    else:
        message = "; ".join(f"{problem['field']}: {problem['message']}" for problem in problems[:5])
    return render_error(request, 422, "validation_error", message, problems)


def _describe(error: Any) -> dict[str, str]:
    # Pydantic's raw errors echo the offending input back; never do that (it may be a password).
    location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
    if error.get("type") == "json_invalid":
        location = []  # pydantic reports a character offset here, not a field
    return {
        "field": ".".join(location) or "body",
        "message": str(error.get("msg", "invalid value")),
        "type": str(error.get("type", "value_error")),
    }


# Seconds a client is asked to wait when the database cannot serve: long enough for a pool to drain or a
# failover to finish, short enough that nobody gives up.
DATABASE_RETRY_AFTER_SECONDS = 2


async def _database_error(request: Request, exc: Exception) -> Response:
    if not is_database_unavailable(exc):
        # A bug, not an outage: the request boundary (``RequestContextMiddleware``) logs it once and
        # answers 500, like any other unexpected error.
        raise exc
    logger.warning(
        "database unavailable: %s", type(exc).__name__, extra={"request_id": request_id_of(request)}
    )
    error = ServiceUnavailable(headers=retry_after(DATABASE_RETRY_AFTER_SECONDS))
    return await _goodnight_error(request, error)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    """A last resort: ``RequestContextMiddleware`` answers unexpected errors, so only a failure in that
    middleware, or in one around it, gets here."""
    logger.exception("unhandled error", extra={"request_id": request_id_of(request)})
    return render_error(request, 500, "internal_error", GoodnightError.default_message)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GoodnightError, _goodnight_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for unavailable in (sa.exc.DBAPIError, sa.exc.TimeoutError, sa.exc.DisconnectionError, OSError):
        app.add_exception_handler(unavailable, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
