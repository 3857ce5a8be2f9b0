"""The small /metrics server of ``goodnight worker`` processes: the same series and access rule as the API,
refusals in the envelope, and a client that stalls or floods costs a socket for a moment only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from goodnight.observability import metrics_server
from goodnight.observability.access import MetricsAccess
from goodnight.observability.metrics_server import serving_metrics
from tests.support.envelope import assert_error
from tests.support.metrics import Samples
from tests.support.processes import clean_env, free_port, run_cli

TOKEN = b"worker-metrics-token-0123456789-abcdefghijklmnop"


@pytest_asyncio.fixture
async def open_server() -> AsyncIterator[str]:
    port = free_port()
    async with serving_metrics(MetricsAccess(None), "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}"


async def raw_exchange(url: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the server says before it closes."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    return answer


async def test_it_serves_the_series(open_server: str) -> None:
    async with httpx.AsyncClient(base_url=open_server) as http:
        response = await http.get("/metrics?ignored=1")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "goodnight_fanout_entries_total" in Samples.parse(response.text).names()


async def test_it_refuses_in_the_envelope(open_server: str) -> None:
    async with httpx.AsyncClient(base_url=open_server) as http:
        assert_error(await http.get("/api/v1/health"), 404, "not_found")
        refused = await http.post("/metrics")
        assert_error(refused, 405, "method_not_allowed")
        assert refused.headers["allow"] == "GET"
        assert_error(await http.get("/metrics", headers={"X-Forwarded-For": "203.0.113.1"}), 403, "forbidden")
    assert (await raw_exchange(open_server, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400 ")


async def test_a_stalled_or_endless_head_is_dropped(
    open_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_server, "HEAD_TIMEOUT_SECONDS", 0.2)
    assert await raw_exchange(open_server, b"GET /metrics HTTP/1.1\r\n") == b""
    endless = b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * (2 * metrics_server.MAX_HEAD_BYTES)
    assert await raw_exchange(open_server, endless) == b""


async def test_with_a_token_it_wants_the_token() -> None:
    port = free_port()
    async with (
        serving_metrics(MetricsAccess(TOKEN), "127.0.0.1", port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        assert_error(await http.get("/metrics"), 401, "unauthorized")
        opened = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN.decode()}"})
        assert opened.status_code == 200, opened.text


def test_worker_refuses_a_metrics_port_with_metrics_off(tmp_path: Path) -> None:
    env = clean_env(
        GOODNIGHT_METRICS="off",
        GOODNIGHT_REDIS_URL="redis://127.0.0.1:1/0",
        # A database the worker could open, so the usage error is what it answers.
        GOODNIGHT_DATABASE_URL="sqlite+aiosqlite:///:memory:",
    )
    result = run_cli(["worker", "--metrics-port", str(free_port())], cwd=tmp_path, env=env)
    assert result.returncode == 2, result
    assert "metrics are switched off" in result.stderr
