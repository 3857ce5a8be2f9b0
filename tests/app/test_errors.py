"""The error envelope, X-Request-ID, secrets never echoed, and the self-hosted API docs."""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from goodnight.config import Environment
from goodnight.logging_setup import build_formatter
from goodnight.users import service as users_service
from tests.support.api import PASSWORD, Api
from tests.support.envelope import assert_error, assert_request_id, assert_validation_error
from tests.support.logs import app_logs, records_of

ROOT = "http://testserver"
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
ASSET_ATTRIBUTE = re.compile(
    r"""<(script|link)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE
)
JSON = {"Content-Type": "application/json"}


# --- the envelope ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/nope"),
        ("GET", "/users/me/extra"),
        ("POST", "/socials/block/123"),
        ("GET", f"{ROOT}/"),
        ("GET", f"{ROOT}/nope"),
        ("GET", f"{ROOT}/api/v2/users/me"),
        ("GET", f"{ROOT}/api-docs/assets/does-not-exist.js"),
    ],
)
async def test_unknown_route_is_404_not_found(client: httpx.AsyncClient, method: str, url: str) -> None:
    assert_error(await client.request(method, url), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("POST", "/users/me", "GET"),
        ("PUT", "/health", "GET"),
        ("GET", "/auth/login", "POST"),
        ("PATCH", "/users", "POST"),
        ("GET", f"/socials/follow/{uuid.uuid4()}", "POST"),
        ("DELETE", f"/socials/unfollow/{uuid.uuid4()}", "POST"),
        ("POST", f"{ROOT}/openapi.json", "GET"),
    ],
)
async def test_wrong_method_is_405_method_not_allowed(
    client: httpx.AsyncClient, method: str, url: str, allowed: str
) -> None:
    response = await client.request(method, url)
    assert_error(response, 405, "method_not_allowed")
    assert allowed in response.headers.get("allow", ""), response.headers


@pytest.mark.parametrize("path", ["/users", "/auth/login"])
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"username": "alice", "password": ', id="truncated"),
        pytest.param(b"{'username': 'alice'}", id="single-quotes"),
        pytest.param(b"not json at all", id="prose"),
        pytest.param(b'{"username": "alice"} trailing', id="trailing-garbage"),
    ],
)
async def test_malformed_json_is_422_validation_error(
    client: httpx.AsyncClient, path: str, raw: bytes
) -> None:
    error = assert_validation_error(await client.post(path, content=raw, headers=JSON))
    assert "json" in error["message"].lower(), error


async def test_validation_failure_names_every_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/users", json={"username": "a!", "password": "short", "name": "n" * 61})
    error = assert_validation_error(response, "username", "password", "name")
    for problem in error["details"]:
        assert set(problem) == {"field", "message", "type"}, problem
        assert all(isinstance(value, str) and value for value in problem.values()), problem


async def test_query_validation_failure_uses_the_envelope(api: Api, client: httpx.AsyncClient) -> None:
    alice = await api.register("alice")
    response = await client.get(f"/users/{alice.id}/followers", params={"limit": 0}, headers=alice.headers)
    assert_validation_error(response, "limit")


# --- X-Request-ID ------------------------------------------------------------------------------------------


async def test_every_response_carries_a_request_id(api: Api, client: httpx.AsyncClient) -> None:
    alice = await api.register("alice")
    responses = [
        await client.get("/health"),
        await client.post("/users", json={"username": "bob", "password": PASSWORD}),
        await client.post("/auth/login", json={"username": "bob", "password": PASSWORD}),
        await client.get("/users/me", headers=alice.headers),
        await client.get("/users/me"),
        await client.post("/auth/login", json={"username": "bob", "password": "wrong password"}),
        await client.post(f"/socials/follow/{alice.id}", headers=alice.headers),
        await client.get(f"/users/{uuid.uuid4()}", headers=alice.headers),
        await client.get("/nope"),
        await client.delete("/health"),
        await client.post("/users", json={}),
        await client.get(f"{ROOT}/openapi.json"),
        await client.get(f"{ROOT}/api-docs"),
        await client.get(f"{ROOT}/api-docs/assets/swagger-ui.css"),
    ]
    statuses = {response.status_code for response in responses}
    assert {200, 201, 400, 401, 404, 405, 422} <= statuses
    ids = [assert_request_id(response) for response in responses]
    assert len(set(ids)) == len(ids), "request ids must be unique per request"
    assert all(SAFE_REQUEST_ID.match(request_id) for request_id in ids), ids


@pytest.mark.parametrize(
    "request_id", ["client-req-42", str(uuid.uuid4()), "a" * 128, "trace:1/2+3=4_5.6-7", "0"]
)
async def test_client_request_id_is_echoed(api: Api, client: httpx.AsyncClient, request_id: str) -> None:
    sent = {"X-Request-ID": request_id}
    health = await client.get("/health", headers=sent)
    assert health.status_code == 200
    assert health.headers["x-request-id"] == request_id
    created = await client.post("/users", json={"username": "carol", "password": PASSWORD}, headers=sent)
    assert created.status_code == 201, created.text
    assert created.headers["x-request-id"] == request_id
    for failure, status, code in [
        (await client.get("/users/me", headers=sent), 401, "unauthorized"),
        (await client.get("/nope", headers=sent), 404, "not_found"),
        (await client.put("/health", headers=sent), 405, "method_not_allowed"),
        (await client.post("/users", json={}, headers=sent), 422, "validation_error"),
        (
            await client.post("/users", json={"username": "carol", "password": PASSWORD}, headers=sent),
            409,
            "username_taken",
        ),
    ]:
        assert assert_error(failure, status, code)["request_id"] == request_id


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(b"a" * 129, id="too-long"),
        pytest.param(b"x" * 10_000, id="far-too-long"),
        pytest.param(b"has space", id="space"),
        pytest.param(b"line\nbreak", id="newline"),
        pytest.param(b"fake\r\nSet-Cookie: session=evil", id="header-injection"),
        pytest.param(b"tab\there", id="tab"),
        pytest.param(b"r\xe9q", id="latin-1"),
        pytest.param("😴".encode(), id="utf-8-emoji"),
        pytest.param(b"<script>alert(1)</script>", id="html"),
        pytest.param(b'{"level":"error"}', id="json"),
        pytest.param(b"", id="empty"),
    ],
)
async def test_hostile_request_id_is_replaced(client: httpx.AsyncClient, hostile: bytes) -> None:
    headers = {b"X-Request-ID": hostile}
    health = await client.get("/health", headers=headers)
    assert health.status_code == 200, health.text
    missing = await client.get("/nope", headers=headers)
    # The envelope carries the replacement, the same one as the header.
    assert_error(missing, 404, "not_found")
    for response in (health, missing):
        replaced = assert_request_id(response)
        assert replaced.encode("latin-1") != hostile
        assert SAFE_REQUEST_ID.match(replaced), replaced
        assert "set-cookie" not in response.headers


# --- secrets never echoed ----------------------------------------------------------------------------------

SECRET = "Leaky-Secret-Marker"


@pytest.mark.parametrize(
    ("path", "content", "status", "code"),
    [
        pytest.param(
            "/users", {"username": "alice", "password": "Sh0rt!X"}, 422, "validation_error", id="short"
        ),
        pytest.param(
            "/users", {"username": "alice", "password": SECRET * 8}, 422, "validation_error", id="too-long"
        ),
        pytest.param(
            "/users",
            {"username": "no good", "password": SECRET[:7], "name": "\x00"},
            422,
            "validation_error",
            id="short-with-other-errors",
        ),
        pytest.param(
            "/users", {"username": "alice", "password": [SECRET]}, 422, "validation_error", id="list"
        ),
        pytest.param(
            "/users",
            f'{{"username": "alice", "password": "{SECRET}"'.encode(),
            422,
            "validation_error",
            id="malformed-json",
        ),
        pytest.param(
            "/auth/login", {"username": "nobody", "password": SECRET}, 401, "invalid_credentials", id="login"
        ),
        pytest.param(
            "/auth/login",
            {"username": "alice", "password": SECRET * 60},
            422,
            "validation_error",
            id="login-huge",
        ),
    ],
)
async def test_password_is_never_echoed(
    client: httpx.AsyncClient, path: str, content: dict[str, Any] | bytes, status: int, code: str
) -> None:
    if isinstance(content, bytes):
        response = await client.post(path, content=content, headers=JSON)
        sent = SECRET
    else:
        response = await client.post(path, json=content)
        password = content["password"]
        sent = password[0] if isinstance(password, list) else password
    assert_error(response, status, code)
    for fragment in {sent, sent[:7], SECRET[:7]}:
        assert fragment not in response.text, response.text
        assert all(fragment not in value for value in response.headers.values()), response.headers


# --- OpenAPI and Swagger UI --------------------------------------------------------------------------------

CONTRACT_ERRORS = {
    ("post", "/api/v1/users"): {409, 422},
    ("post", "/api/v1/auth/login"): {401},
    ("get", "/api/v1/users/me"): {401},
    ("get", "/api/v1/users/{user_id}"): {401, 404},
    ("get", "/api/v1/users/{user_id}/followers"): {401, 404, 422},
    ("get", "/api/v1/users/{user_id}/followings"): {401, 404, 422},
    ("post", "/api/v1/socials/follow/{user_id}"): {400, 401, 404, 422},
    ("post", "/api/v1/socials/unfollow/{user_id}"): {401, 404, 422},
}


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{ROOT}/openapi.json")
    assert response.status_code == 200, response.text
    assert_request_id(response)
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"]
    for (method, path), statuses in CONTRACT_ERRORS.items():
        assert path in document["paths"], path
        documented = {
            int(status) for status in document["paths"][path][method]["responses"] if status.isdigit()
        }
        assert statuses <= documented, (method, path, documented)


async def test_swagger_ui_is_served_without_a_cdn(client: httpx.AsyncClient) -> None:
    page = await client.get(f"{ROOT}/api-docs")
    assert page.status_code == 200, page.text
    assert_request_id(page)
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assets = [url for _, url in ASSET_ATTRIBUTE.findall(html)]
    scripts = [url for tag, url in ASSET_ATTRIBUTE.findall(html) if tag.lower() == "script"]
    styles = [url for url in assets if url.endswith(".css")]
    assert scripts, html
    assert styles, html
    for url in assets:
        assert not re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", url, re.IGNORECASE), f"external asset {url}"
    assert not re.search(r"""(?:src|href|url)\s*[=:]\s*["']?(?:https?:)?//""", html, re.IGNORECASE), html
    assert "/openapi.json" in html
    for url in assets:
        asset = await client.get(f"{ROOT}{url}" if url.startswith("/") else f"{ROOT}/{url}")
        assert asset.status_code == 200, (url, asset.status_code)
        assert asset.content, url
    for url in scripts:
        asset = await client.get(f"{ROOT}{url}")
        assert "javascript" in asset.headers["content-type"], (url, asset.headers)


# --- unexpected errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(lambda: RuntimeError("internal detail 42"), id="bug"),
        # A database error that is not an outage (here a constraint nobody expected) is a bug too.
        pytest.param(
            lambda: sa.exc.IntegrityError("INSERT", {}, Exception("internal detail 42")), id="database-bug"
        ),
    ],
)
async def test_an_unexpected_error_is_a_500_envelope_logged_once(
    api: Api, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, failure: Callable[[], Exception]
) -> None:
    alice = await api.register()
    raised = failure()

    async def broken(*_: object) -> None:
        raise raised

    monkeypatch.setattr(users_service, "get_me", broken)
    with app_logs() as records:
        response = await client.get("/users/me", headers=alice.headers)
    error = assert_error(response, 500, "internal_error")
    assert "internal detail" not in response.text
    # One record for the request: its access line, carrying the traceback; nothing else.
    (record,) = records_of(records, error["request_id"])
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[1] is raised
    line = build_formatter(Environment.PRODUCTION).format(record)
    assert "\n" not in line
    logged = json.loads(line)
    assert logged["status"] == 500
    assert logged["path"] == "/api/v1/users/me"
    assert logged["user_id"] == alice.id
    assert "internal detail 42" in logged["exception"]
    # The app still serves.
    monkeypatch.undo()
    assert (await client.get("/users/me", headers=alice.headers)).status_code == 200
