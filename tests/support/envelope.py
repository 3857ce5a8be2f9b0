"""Assertions on the error envelope every 4xx/5xx answer shares, and on the X-Request-ID header."""

from __future__ import annotations

from typing import Any

import httpx

ENVELOPE_KEYS = {"code", "message", "details", "request_id"}
REQUIRED_KEYS = {"code", "message", "request_id"}


def assert_request_id(response: httpx.Response) -> str:
    """Every response, success or failure, names its request; returns the id."""
    request_id: str | None = response.headers.get("x-request-id")
    assert request_id, f"no X-Request-ID on {response.request.method} {response.request.url}"
    return request_id


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check status, envelope shape, error code and request id; returns the inner ``error`` object."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status} {code}, "
        f"got {response.status_code}: {response.text}"
    )
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert REQUIRED_KEYS <= set(error) <= ENVELOPE_KEYS, error
    assert error["code"] == code, f"expected code {code!r}, got {error['code']!r}: {error}"
    assert isinstance(error["message"], str), error
    assert error["message"].strip(), error
    assert error["request_id"] == assert_request_id(response), (error, response.headers)
    return error


def assert_validation_error(response: httpx.Response, *fields: str) -> dict[str, Any]:
    """A 422 ``validation_error`` whose details name at least the given fields."""
    error = assert_error(response, 422, "validation_error")
    if fields:
        details = error.get("details")
        problems = [details] if isinstance(details, dict) else details
        assert isinstance(problems, list), error
        named = {problem["field"] for problem in problems}
        assert set(fields) <= named, f"expected problems on {fields}, got {details}"
    return error
