"""The HTTP series and the request log line: counted by route template, method and status, bounded
whatever the paths and methods clients send, and the request's id in its context variable."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from goodnight.kit.request_context import request_id_var
from goodnight.middleware import MAX_BODY_BYTES
from goodnight.observability.metrics import KNOWN_METHODS, UNMATCHED
from tests.support.api import Api
from tests.support.apps import running
from tests.support.databases import TestDatabase, create_database, settings_for
from tests.support.logs import app_logs, records_of
from tests.support.metrics import scrape
from tests.support.rate_limits import client_from

REQUESTS = "goodnight_http_requests_total"
DURATION = "goodnight_http_request_duration_seconds"
USER_ROUTE = "/api/v1/users/{user_id}"
NOBODY = "0194f0f0-0000-7000-8000-000000000000"


@pytest_asyncio.fixture(scope="module")
async def app() -> AsyncIterator[FastAPI]:
    database: TestDatabase = await create_database("sqlite")
    settings = settings_for(database.url, trusted_proxies="10.0.0.0/8")
    async with running(settings) as application:
        yield application
    await database.drop()


async def test_requests_are_counted_by_route_template_method_and_status(app: FastAPI) -> None:
    async with client_from(app, "127.0.0.1") as http:
        member = await Api(http).register()
        before = await scrape(http)
        for _ in range(3):
            assert (await http.get(f"/users/{member.id}", headers=member.headers)).status_code == 200
        assert (await http.get(f"/users/{member.id}")).status_code == 401
        # An error raised where the route's fast lane serves it (``kit.fast_lane``) is named the same.
        assert (await http.get(f"/users/{NOBODY}", headers=member.headers)).status_code == 404
        assert (await http.delete(f"/users/{member.id}", headers=member.headers)).status_code == 405
        assert (await http.request("BREW", f"/users/{member.id}")).status_code == 405
        assert (await http.get("/no/such/route")).status_code == 404
        # Refused by the edge before routing: no route to name.
        too_big = await http.post("/users", content=b"x" * (MAX_BODY_BYTES + 1))
        assert too_big.status_code == 413
        after = await scrape(http)

    def counted(method: str, route: str, status: str) -> float:
        labels = {"method": method, "route": route, "status": status}
        return after.value(REQUESTS, **labels) - before.value(REQUESTS, **labels)

    assert counted("GET", USER_ROUTE, "200") == 3
    assert counted("GET", USER_ROUTE, "401") == 1
    assert counted("GET", USER_ROUTE, "404") == 1
    assert counted("DELETE", USER_ROUTE, "405") == 1
    assert counted("other", USER_ROUTE, "405") == 1
    assert counted("GET", UNMATCHED, "404") == 1
    assert counted("POST", UNMATCHED, "413") == 1
    timed = {"method": "GET", "route": USER_ROUTE}
    assert after.value(f"{DURATION}_count", **timed) - before.value(f"{DURATION}_count", **timed) == 5
    assert after.value(f"{DURATION}_bucket", le="+Inf", **timed) == after.value(f"{DURATION}_count", **timed)
    # The scrape itself is the one request in flight when it is taken.
    assert after.value("goodnight_http_requests_in_flight") == 1


async def test_random_paths_and_methods_do_not_grow_the_series(app: FastAPI) -> None:
    templates = {route.path for route in iter_route_contexts(app.routes)}
    async with client_from(app, "127.0.0.1") as http:
        for _ in range(5):
            await http.get(f"/{secrets.token_hex(8)}")
        first = await scrape(http)
        for _ in range(200):
            method = secrets.choice(["GET", "POST", f"X{secrets.token_hex(3).upper()}"])
            await http.request(
                method, f"/{secrets.token_hex(8)}/{secrets.token_hex(4)}?q={secrets.token_hex(4)}"
            )
            await http.get(f"/users/{secrets.token_hex(16)}")
        second = await scrape(http)
    # At most the few (method, status) pairs seen for the first time, never one per path or per method.
    # (The registry is the process's: other tests' apps, with routes of their own, count into it too.)
    new = [labels for labels in second.series(REQUESTS) if labels not in first.series(REQUESTS)]
    assert len(new) <= 6, new
    for labels in new:
        assert labels["route"] in templates | {UNMATCHED}, labels
        assert labels["method"] in KNOWN_METHODS | {"other"}, labels


async def test_the_log_line_names_route_client_and_user(app: FastAPI) -> None:
    async with client_from(app, "10.1.2.3") as http:
        member = await Api(http).register()
        with app_logs() as records:
            response = await http.get(
                f"/users/{member.id}", headers={**member.headers, "X-Forwarded-For": "198.51.100.9"}
            )
    (line,) = [
        record
        for record in records_of(records, response.headers["x-request-id"])
        if record.name == "goodnight.access"
    ]
    assert line.levelno == logging.INFO
    fields = line.__dict__
    assert fields["route"] == USER_ROUTE
    assert fields["path"] == f"/api/v1/users/{member.id}"
    assert fields["client_ip"] == "198.51.100.9"  # the address the trusted proxy saw
    assert fields["user_id"] == member.id
    assert (fields["method"], fields["status"]) == ("GET", 200)
    assert fields["duration_ms"] >= 0


@pytest.mark.parametrize("path", ["/health", "/health/ready", "http://testserver/metrics"])
async def test_probes_are_logged_at_debug(app: FastAPI, path: str) -> None:
    logger = logging.getLogger("goodnight")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        async with client_from(app, "127.0.0.1") as http:
            with app_logs() as records:
                response = await http.get(path)
    finally:
        logger.setLevel(level)
    assert response.status_code == 200
    (line,) = records_of(records, response.headers["x-request-id"])
    assert line.levelno == logging.DEBUG


async def test_the_request_id_is_in_context_during_the_request_only(app: FastAPI) -> None:
    seen: list[str | None] = []

    async def endpoint() -> dict[str, str]:
        seen.append(request_id_var.get())
        return {}

    app.add_api_route("/api/v1/test/request-id", endpoint)
    async with client_from(app, "127.0.0.1") as http:
        response = await http.get("/test/request-id", headers={"X-Request-ID": "trace-me-42"})
    assert response.status_code == 200
    assert seen == ["trace-me-42"]
    assert request_id_var.get() is None
