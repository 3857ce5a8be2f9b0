"""Who may read /metrics: the token holder, else loopback peers not behind a proxy; never rate limited,
never in the OpenAPI document, absent when metrics are off, and a weak token stops the start-up."""

from __future__ import annotations

import httpx
import pytest

from goodnight.config import ConfigurationError
from goodnight.main import create_app
from tests.support.apps import running
from tests.support.databases import TestDatabase, settings_for
from tests.support.envelope import assert_error
from tests.support.metrics import METRICS_URL
from tests.support.rate_limits import assert_no_limit_headers, assert_rate_limited, client_from, limited_app

TOKEN = "metrics-token-0123456789-abcdefghijklmnopqrstuvwxyz"
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
REMOTE = "203.0.113.7"


async def get_metrics(
    database: TestDatabase, peer: str, *, headers: dict[str, str] | None = None, **settings: object
) -> httpx.Response:
    async with running(settings_for(database.url, **settings)) as app, client_from(app, peer) as http:
        return await http.get(METRICS_URL, headers=headers)


@pytest.mark.parametrize("peer", LOOPBACK)
async def test_without_a_token_loopback_peers_are_answered(sqlite: TestDatabase, peer: str) -> None:
    response = await get_metrics(sqlite, peer)
    assert response.status_code == 200, response.text
    assert "goodnight_http_requests_total" in response.text


@pytest.mark.parametrize("forwarded", ["X-Forwarded-For", "Forwarded", "X-Real-IP"])
async def test_without_a_token_anyone_else_is_refused(sqlite: TestDatabase, forwarded: str) -> None:
    assert_error(await get_metrics(sqlite, REMOTE), 403, "forbidden")
    # A reverse proxy on this machine connects from loopback on someone else's behalf.
    proxied = await get_metrics(sqlite, "127.0.0.1", headers={forwarded: REMOTE})
    assert_error(proxied, 403, "forbidden")


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN]
)
async def test_with_a_token_anything_else_is_401(sqlite: TestDatabase, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for peer in ("127.0.0.1", REMOTE):
        response = await get_metrics(sqlite, peer, headers=headers, metrics_token=TOKEN)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


async def test_the_token_opens_them_from_anywhere(sqlite: TestDatabase) -> None:
    for peer, headers in ((REMOTE, {}), ("127.0.0.1", {"X-Forwarded-For": REMOTE})):
        response = await get_metrics(
            sqlite, peer, headers={"Authorization": f"bearer {TOKEN}", **headers}, metrics_token=TOKEN
        )
        assert response.status_code == 200, response.text


async def test_metrics_off_means_no_endpoint(sqlite: TestDatabase) -> None:
    assert_error(await get_metrics(sqlite, "127.0.0.1", metrics=False), 404, "not_found")


def test_metrics_are_not_in_the_openapi_document() -> None:
    document = create_app(settings_for("sqlite+aiosqlite:///:memory:")).openapi()
    assert not [path for path in document["paths"] if "metrics" in path]


async def test_metrics_are_never_rate_limited(sqlite: TestDatabase) -> None:
    async with (
        limited_app(sqlite.url, rate_limit_anonymous="1/minute") as app,
        client_from(app, "::1") as http,
    ):
        for _ in range(5):
            response = await http.get(METRICS_URL)
            assert response.status_code == 200, response.text
            assert_no_limit_headers(response)
        await http.get("/users/me")
        assert_rate_limited(await http.get("/users/me"), 1)


@pytest.mark.parametrize("token", ["short-token", "changeme" * 5, "a" * 40])
def test_a_weak_token_stops_the_start_up(token: str) -> None:
    with pytest.raises(ConfigurationError, match="GOODNIGHT_METRICS_TOKEN"):
        settings_for("sqlite+aiosqlite:///:memory:", metrics_token=token)
