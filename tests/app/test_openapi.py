"""The committed openapi.json is the contract: the running app must generate exactly that document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from goodnight.main import create_app
from tests.support.databases import settings_for

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"
REGENERATE = "uv run goodnight openapi --output openapi.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    generated: dict[str, Any] = create_app(settings_for("sqlite+aiosqlite:///:memory:")).openapi()
    return generated


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


def test_app_matches_committed_document(document: dict[str, Any]) -> None:
    committed = json.loads(COMMITTED.read_text())
    # Round-trip through JSON so tuples, key order and the like compare as they would on the wire.
    assert json.loads(json.dumps(document)) == committed, f"openapi.json is stale; run: {REGENERATE}"


def test_every_error_response_uses_the_envelope(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (method, path, status)


def test_authenticated_operations_document_401(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        if operation.get("security"):
            assert "401" in operation["responses"], (method, path)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in operation["responses"], (method, path)


async def test_served_document_is_the_committed_one(client: httpx.AsyncClient, app: FastAPI) -> None:
    response = await client.get("http://testserver/openapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(COMMITTED.read_text())
