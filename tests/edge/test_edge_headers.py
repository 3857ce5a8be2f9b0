"""Security headers on every response, a CSP that lets the bundled Swagger UI run, and CORS."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.support.api import PASSWORD, Api
from tests.support.apps import client_for, running
from tests.support.databases import TestDatabase, settings_for
from tests.support.envelope import assert_error, assert_request_id

ALLOWED = "https://app.example"
ALSO_ALLOWED = "http://localhost:5173"
STRANGER = "https://evil.example"


def assert_hardened(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_every_api_answer_is_hardened_and_never_cached(api: Api, client: httpx.AsyncClient) -> None:
    alice = await api.register("alice")
    answers = [
        await client.post("/auth/login", json={"username": "alice", "password": PASSWORD}),
        await client.get("/users/me", headers=alice.headers),
        await client.get("/sleep_records/followings", headers=alice.headers),
        await client.get("/users/me"),  # 401
        await client.get("/no/such/route"),  # 404
        await client.post("/users", content=b"{"),  # 422
        await client.get("/health"),
    ]
    for response in answers:
        assert_hardened(response)
        assert response.headers["cache-control"] == "no-store", response.request.url
    # The token response above all: no cache between here and the client may keep it.
    assert answers[0].status_code == 200
    assert answers[0].headers.get_list("cache-control") == ["no-store"]


async def test_docs_carry_a_policy_that_allows_only_their_own_scripts(client: httpx.AsyncClient) -> None:
    page = await client.get("http://testserver/api-docs")
    assert page.status_code == 200
    assert_hardened(page)
    policy = dict(
        directive.strip().split(" ", 1) for directive in page.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    scripts = policy["script-src"].split()
    assert "'unsafe-inline'" not in scripts
    assert "'unsafe-eval'" not in scripts
    # Every inline script on the page is allowed by its hash, and nothing else inline is.
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert inline, "the page starts Swagger UI with an inline script"
    hashes = {f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline}
    assert hashes == {source for source in scripts if source.startswith("'sha256-")}
    # Every script, style sheet and icon the page loads comes from this origin, and is served.
    for address in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert address.startswith("/"), address
        asset = await client.get(f"http://testserver{address}")
        assert asset.status_code == 200, address
        assert_hardened(asset)


# --- CORS ------------------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def cors_client(database: TestDatabase) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(database.url, cors_origins=f"{ALLOWED}, {ALSO_ALLOWED}")
    async with running(settings) as app, client_for(app) as http:
        yield http


def preflight(origin: str, method: str = "GET", headers: str = "authorization") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.mark.parametrize("origin", [ALLOWED, ALSO_ALLOWED])
async def test_an_allowed_origins_preflight_is_answered(cors_client: httpx.AsyncClient, origin: str) -> None:
    response = await cors_client.options(
        "/sleep_records/followings", headers=preflight(origin, headers="authorization, content-type")
    )
    assert 200 <= response.status_code < 300, response.text
    assert response.headers["access-control-allow-origin"] == origin
    allowed_headers = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed_headers
    assert "GET" in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers
    assert_hardened(response)


async def test_an_allowed_origin_can_read_the_answer_and_its_headers(
    api: Api, cors_client: httpx.AsyncClient
) -> None:
    await api.register("alice")  # the CORS app shares the database of the ``api`` fixture
    login = await cors_client.post(
        "/auth/login", json={"username": "alice", "password": PASSWORD}, headers={"Origin": ALLOWED}
    )
    assert login.status_code == 200, login.text
    assert login.headers["access-control-allow-origin"] == ALLOWED
    exposed = login.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed
    assert "retry-after" in exposed


@pytest.mark.parametrize(
    "origin", [STRANGER, "https://app.example.evil.example", "null", "https://APP.example"]
)
async def test_other_origins_get_no_cors_headers(cors_client: httpx.AsyncClient, origin: str) -> None:
    refused = await cors_client.options("/sleep_records/followings", headers=preflight(origin))
    assert_error(refused, 405, "method_not_allowed")
    answered = await cors_client.get("/health", headers={"Origin": origin})
    assert answered.status_code == 200
    for response in (refused, answered):
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]


async def test_a_preflight_asking_for_more_than_allowed_is_refused_in_the_envelope(
    cors_client: httpx.AsyncClient,
) -> None:
    for headers in (preflight(ALLOWED, method="TRACE"), preflight(ALLOWED, headers="x-api-key")):
        response = await cors_client.options("/users/me", headers=headers)
        assert_error(response, 400, "cors_not_allowed")
        assert_request_id(response)


async def test_without_configured_origins_nobody_gets_cors(client: httpx.AsyncClient) -> None:
    refused = await client.options("/sleep_records/followings", headers=preflight(ALLOWED))
    assert_error(refused, 405, "method_not_allowed")
    assert "access-control-allow-origin" not in refused.headers
