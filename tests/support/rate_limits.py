"""Apps with rate limits switched on, clients that come from a chosen address, and checks on the answers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from goodnight.ratelimit.limiter import RateLimiter
from tests.support.apps import BASE_URL, running
from tests.support.databases import settings_for
from tests.support.envelope import assert_error

LIMIT_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


@contextlib.asynccontextmanager
async def limited_app(database_url: str, **overrides: object) -> AsyncIterator[FastAPI]:
    """The app, started, with rate limits on and ``overrides`` (policies, Redis) applied."""
    async with running(settings_for(database_url, **{"rate_limits": True, **overrides})) as app:
        yield app


def client_from(app: FastAPI, address: str) -> httpx.AsyncClient:
    """A client whose requests reach the app from ``address`` (the socket peer)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)


def limiter_of(app: FastAPI) -> RateLimiter:
    limiter: RateLimiter = app.state.services.rate_limiter
    return limiter


def assert_limit_headers(response: httpx.Response, limit: int, remaining: int) -> None:
    headers = response.headers
    assert all(name in headers for name in LIMIT_HEADERS), dict(headers)
    assert headers["ratelimit-limit"] == str(limit), dict(headers)
    assert headers["ratelimit-remaining"] == str(remaining), dict(headers)
    assert int(headers["ratelimit-reset"]) >= 0, dict(headers)


def assert_no_limit_headers(response: httpx.Response) -> None:
    assert not any(name in response.headers for name in (*LIMIT_HEADERS, "retry-after")), dict(
        response.headers
    )


def assert_rate_limited(response: httpx.Response, limit: int) -> int:
    """A 429 ``rate_limited`` in the envelope with every limit header; returns Retry-After in seconds."""
    assert_error(response, 429, "rate_limited")
    assert_limit_headers(response, limit, 0)
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert int(retry_after) >= 1, retry_after
    assert response.headers["ratelimit-reset"] == retry_after
    return int(retry_after)


def header_names(response: httpx.Response) -> set[str]:
    return set(response.headers.keys())
