"""Calling the app in process, the way a server would, to measure what one request costs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


def get_scope(path: str, token: str | None = None, client: str = "127.0.0.1") -> dict[str, Any]:
    """The ASGI scope of ``GET path`` from ``client``, with a bearer token when one is given."""
    headers = [(b"host", b"bench")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": (client, 1),
        "server": ("127.0.0.1", 80),
    }


async def call(app: Any, scope: dict[str, Any]) -> None:
    """One request through ``app`` (a fresh ``state``, an empty body, the response thrown away)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    await app(dict(scope, state={}), receive, send)


async def cpu_us(
    work: Callable[[], Awaitable[object]], calls: int = 3000, runs: int = 5, in_flight: int = 1
) -> float:
    """Microseconds of this process's CPU per call of ``work``: the best of ``runs`` runs of ``calls``
    calls, after a warm-up, so the noise of a shared machine mostly drops out.

    With ``in_flight`` > 1, that many callers take turns, as requests do on a loaded server. One at a time,
    every round trip to Redis or the database leaves the event loop idle until the reply, and the process
    pays for going to sleep and waking up (and for cold caches after it): about twice what the same round
    trip costs under load, where replies find the loop busy with other requests."""

    async def caller(count: int) -> None:
        for _ in range(count):
            await work()

    async def run(total: int) -> None:
        share, extra = divmod(total, in_flight)
        await asyncio.gather(*(caller(share + (index < extra)) for index in range(in_flight)))

    await run(300)
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        await run(calls)
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best
