"""What a rate limit costs a request: process CPU and wall time per call, in process.

    uv run --frozen python bench/rate_limit_cost.py [--calls 5000]

It starts a private ``redis-server`` on a spare port (never the shared one) and times, per call:

- ``RateLimiter.hit`` switched off, in memory, on Redis in one pipelined round trip (what the app does), and
  on Redis through the ``limits`` strategy API (hit, then read the window back: two round trips), next to a
  bare Redis ``GET`` for scale;
- a whole request through the app (every middleware, routing, the error envelope) with limits off, in
  memory and on Redis: ``GET /api/v1/users/me`` without a token (401, the anonymous policy) and with a valid
  token on a route that does not exist (404, the user policy; neither touches the database).

Each figure is the best of five runs of ``--calls`` calls, so other processes on a shared machine mostly drop
out. It prints a Markdown table, then the Redis memory one user's window takes near the user limit.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import uvloop
from gnbench.asgi import get_scope
from redis.asyncio import Redis

from goodnight.config import Settings
from goodnight.main import create_app
from goodnight.migrate import upgrade_to_head
from goodnight.ratelimit.limiter import RateLimiter
from goodnight.ratelimit.windows import KEY_PREFIX, RedisWindows, StrategyWindows

RUNS = 5
# Requests come from this many users and addresses in turn, so each window holds a realistic handful of
# entries (the default policies, 1,200 a minute per user and 100 per address, never refuse here).
CLIENTS = 2000
# The worst case for one user: this many requests already in the window, under the limit of 1,200.
BUSY_USER_ENTRIES = 900
BUSY_USER_CALLS = 50


@contextmanager
def private_redis() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="goodnight-bench-redis-")
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    url = f"redis://127.0.0.1:{port}/0"
    try:
        with redis.Redis.from_url(url, retry_on_error=[redis.ConnectionError]) as connection:
            deadline = time.monotonic() + 10
            while True:
                try:
                    connection.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        yield url
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(directory, ignore_errors=True)


async def best_of(calls: int, work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(CPU µs, wall µs) per call, each the best of RUNS runs."""
    cpu, wall = [], []
    for _ in range(RUNS):
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        for _ in range(calls):
            await work()
        cpu.append((time.process_time() - started_cpu) / calls * 1e6)
        wall.append((time.perf_counter() - started_wall) / calls * 1e6)
    return min(cpu), min(wall)


DATABASE = Path(tempfile.mkdtemp(prefix="goodnight-bench-")) / "goodnight.db"
SECRET = uuid.uuid4().hex * 2


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{DATABASE}",
        "jwt_secret": SECRET,
        "embedded_worker": False,
    }
    values.update(overrides)
    return Settings(**values)


def in_turn(items: list[Any]) -> Callable[[], Any]:
    counter = itertools.count()
    return lambda: items[next(counter) % len(items)]


async def app_rows(label: str, overrides: dict[str, Any], calls: int) -> list[tuple[str, float, float]]:
    app = create_app(settings(**overrides))
    rows = []
    async with app.router.lifespan_context(app):
        tokens = [app.state.services.tokens.issue(uuid.uuid4()).token for _ in range(CLIENTS)]
        addresses = [f"10.0.{n // 256}.{n % 256}" for n in range(CLIENTS)]
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        for name, requests, status in (
            ("401, anonymous", [get_scope("/api/v1/users/me", None, address) for address in addresses], 401),
            ("404, with a token", [get_scope("/api/v1/nothing", token, "10.1.0.1") for token in tokens], 404),
        ):
            next_request = in_turn(requests)

            async def call(next_request: Callable[[], Any] = next_request) -> None:
                await app(dict(next_request(), state={}), receive, send)

            cpu, wall = await best_of(calls, call)
            assert set(statuses) == {status}, sorted(set(statuses))
            statuses.clear()
            rows.append((f"request {name}: limits {label}", cpu, wall))
    return rows


async def limiter_rows(redis_url: str, calls: int) -> tuple[list[tuple[str, float, float]], str]:
    """The table's limiter rows, and what one busy user's window takes in Redis."""
    rows = []
    users = [f"user-{n}" for n in range(CLIENTS)]
    off = RateLimiter.build(settings(rate_limits=False))
    memory = RateLimiter.build(settings())
    shared = RateLimiter.build(settings(redis_url=redis_url))
    policy = memory.policies.user
    for label, limiter in (("off", off), ("in memory", memory), ("on Redis, one round trip", shared)):
        cpu, wall = await best_of(
            calls, lambda limiter=limiter, next_user=in_turn(users): limiter.hit(policy, next_user())
        )
        rows.append((f"`RateLimiter.hit`, {CLIENTS} users in turn: {label}", cpu, wall))
    for label, limiter in (("in memory", memory), ("on Redis", shared)):
        for _ in range(BUSY_USER_ENTRIES):
            await limiter.hit(policy, "busy")
        cpu, wall = await best_of(BUSY_USER_CALLS, lambda limiter=limiter: limiter.hit(policy, "busy"))
        rows.append(
            (f"`RateLimiter.hit`, one user {BUSY_USER_ENTRIES}+ requests into the minute: {label}", cpu, wall)
        )
    client = Redis.from_url(redis_url)
    busy_key = f"{KEY_PREFIX}:{policy.limits[0].key_for(policy.name, 'busy')}"
    entries, size = await client.llen(busy_key), await client.memory_usage(busy_key)
    footprint = f"Redis memory for one user's window holding {entries} requests: {size} bytes"
    strategy_api = StrategyWindows(RedisWindows(client).storage)
    next_user = in_turn(users)
    cpu, wall = await best_of(calls, lambda: strategy_api.hit(policy.limits, ("strategy", next_user())))
    rows.append(
        ("the same on Redis through the strategy API (hit, then read back: two round trips)", cpu, wall)
    )
    cpu, wall = await best_of(calls, lambda: client.get("bench"))
    rows.append(("a bare Redis `GET`, for scale", cpu, wall))
    for limiter in (off, memory, shared):
        await limiter.close()
    await client.aclose()
    return rows, footprint


async def main(calls: int) -> None:
    try:
        # Tokens are checked against the revocations the app loads from its database at start-up.
        await upgrade_to_head(settings())
        with private_redis() as redis_url:
            rows, footprint = await limiter_rows(redis_url, calls)
            for label, overrides in (
                ("off", {"rate_limits": False}),
                ("in memory", {}),
                ("on Redis", {"redis_url": redis_url}),
            ):
                rows.extend(await app_rows(label, overrides, calls))
    finally:
        shutil.rmtree(DATABASE.parent, ignore_errors=True)
    print(f"| what (best of {RUNS} runs) | CPU µs/call | wall µs/call |")
    print("|---|---:|---:|")
    for what, cpu, wall in rows:
        print(f"| {what} | {cpu:.0f} | {wall:.0f} |")
    print()
    print(footprint)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000)
    uvloop.run(main(parser.parse_args().calls))
