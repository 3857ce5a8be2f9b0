"""Hostile or broken input gets a clear 4xx in the envelope, never a 500."""

from __future__ import annotations

import json

import httpx
import pytest

from goodnight.config import Environment
from goodnight.logging_setup import build_formatter
from goodnight.middleware import MAX_BODY_BYTES
from tests.support.api import PASSWORD, Api
from tests.support.envelope import assert_error
from tests.support.logs import app_logs

JSON = {"content-type": "application/json"}


async def test_oversized_body_is_refused_before_reading(client: httpx.AsyncClient) -> None:
    body = b'{"username": "' + b"a" * MAX_BODY_BYTES + b'", "password": "12345678"}'
    assert_error(await client.post("/users", content=body, headers=JSON), 413, "payload_too_large")


async def test_oversized_streamed_body_is_refused(client: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: sent chunked
        for _ in range(8):
            yield b" " * (MAX_BODY_BYTES // 4)

    response = await client.post("/users", content=chunks(), headers=JSON)
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 50_000,  # deeper than any JSON parser recursion limit
        b"\xff\xfe\x00",
        b"",
        b"null",
        b'"just a string"',
        b'{"username": "abc", "password": 12345678}',
        b'{"username": ["abc"], "password": "12345678"}',
        b'{"username": "abc\\u0000", "password": "12345678"}',
    ],
)
async def test_malformed_bodies(client: httpx.AsyncClient, body: bytes) -> None:
    assert_error(await client.post("/users", content=body, headers=JSON), 422, "validation_error")


@pytest.mark.parametrize(
    "path",
    [
        "/users/%00",
        "/users/" + "9" * 5000,
        "/users/00000000-0000-0000-0000-000000000000",
        "/users/%F0%9F%98%B4",
        "/sleep_records/..%2F..%2Fetc%2Fpasswd",
    ],
)
async def test_odd_ids_are_not_found(api: Api, path: str) -> None:
    alice = await api.register()
    assert_error(await api.client.get(path, headers=alice.headers), 404, "not_found")


@pytest.mark.parametrize(
    "params",
    [
        {"per_page": "99999999999999999999999"},
        {"per_page": "-1"},
        {"per_page": "1e3"},
        {"cursor": "\u0000"},
        {"cursor": "W10"},  # []: valid base64, valid JSON, wrong shape
        {"cursor": "WzEsMiwzXQ"},  # [1,2,3]: right length, wrong types
        {"start_index": "NaN"},
    ],
)
async def test_hostile_feed_parameters(api: Api, params: dict[str, str]) -> None:
    alice = await api.register()
    assert_error(await api.feed(alice, **params), 422, "validation_error")


async def test_unicode_and_sql_looking_names_are_stored_verbatim(api: Api) -> None:
    name = "Zoë 🛌 '; DROP TABLE users; --"
    created = await api.client.post(
        "/users", json={"username": "robert_t", "password": PASSWORD, "name": name}
    )
    assert created.status_code == 201, created.text
    assert created.json()["name"] == name


async def test_production_logs_one_json_line_per_request_without_secrets(api: Api) -> None:
    alice = await api.register()
    formatter = build_formatter(Environment.PRODUCTION)
    with app_logs() as records:
        await api.client.get("/users/me", headers=alice.headers | {"X-Request-ID": "trace-42"})
        await api.client.post("/auth/login", json={"username": alice.username, "password": PASSWORD})
    lines = [formatter.format(record) for record in records if record.name == "goodnight.access"]
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["method"] == "GET"
    assert first["path"] == "/api/v1/users/me"
    assert first["status"] == 200
    assert first["request_id"] == "trace-42"
    assert first["user_id"] == alice.id
    assert isinstance(first["duration_ms"], float)
    for line in lines:
        assert alice.token not in line
        assert PASSWORD not in line
