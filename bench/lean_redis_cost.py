"""What the feed page's two Redis reads cost the client: redis-py's asyncio client next to the lean one.

    scripts/uv run --frozen python bench/lean_redis_cost.py [--redis-url redis://127.0.0.1:6379/0]

Without ``--redis-url`` it runs a private redis-server on a spare port. It writes one reader's timeline
under a fresh reader id (a marker, eight day buckets, the renderings of the page's members), measures each
call in process CPU with ``gnbench.asgi.cpu_us`` (the best of five runs of 3,000 calls), and deletes what
it wrote. The two clients take turns ``--rounds`` times and each call keeps its best figure, so a burst of
load elsewhere on a shared machine disturbs both alike or neither. It prints a Markdown table, in µs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop
from gnbench.asgi import cpu_us
from gnbench.infra import RedisServer
from redis.asyncio import Redis

from goodnight.config import Settings
from goodnight.feed.position import encode_position
from goodnight.feed.window import WINDOW
from goodnight.kit.clock import utcnow
from goodnight.redis_client import connect
from goodnight.timeline import keys
from goodnight.timeline.lean_redis import LeanRedis
from goodnight.timeline.pages import Pages
from goodnight.timeline.store import TimelineStore

PAGE = 11  # the default page size
WANTED = PAGE + 4  # what the reader asks of each bucket (reader.SLACK)
RENDERING = b'{"id":"%s","user":{"id":"...","name":"A Sleeper"},"clock_in":"...","duration_seconds":28800}'


async def write_timeline(redis: Redis, reader: uuid.UUID) -> tuple[list[bytes], list[str]]:
    """A warm timeline of 4 members a day over the window; returns the first page's members and every key
    written."""
    now = utcnow()
    days = keys.bucket_days(now - WINDOW, now)
    written = [keys.marker_key(reader)]
    await redis.hset(written[0], mapping={"seen": str(now.timestamp()), "follows": "1"})
    members: list[bytes] = []
    for day in days:
        added = [encode_position(20_000 + n * 1_000, uuid.uuid4()) for n in range(4)]
        written.append(keys.bucket_key(reader, day))
        await redis.zadd(written[-1], dict.fromkeys(added, 0))
        members += added
    page = sorted(members, reverse=True)[:PAGE]
    renderings = {keys.rendering_key_of(member): RENDERING % member.hex().encode() for member in page}
    await redis.mset(renderings)
    return page, [*written, *renderings]


async def measure(url: str, rounds: int) -> dict[str, dict[str, float]]:
    redis = connect(Settings(redis_url=url))
    lean = LeanRedis.for_settings(Settings(redis_url=url))
    if not isinstance(redis, Redis) or lean is None:
        raise SystemExit("the lean client needs a plain redis:// URL of a single node")
    reader = uuid.uuid4()
    page, written = await write_timeline(redis, reader)
    now = utcnow()
    first, last = keys.bucket_day(now - WINDOW), keys.bucket_day(now)
    clients = {"redis-py": TimelineStore(redis).pages, "lean": TimelineStore(redis, lean).pages}
    best: dict[str, dict[str, float]] = {name: {} for name in clients}
    try:
        for _ in range(rounds):
            for name, pages in clients.items():
                for call, work in calls(pages, reader, first, last, page).items():
                    figure = await cpu_us(work)
                    best[name][call] = min(best[name].get(call, figure), figure)
    finally:
        await redis.delete(*written)
        await lean.close()
        await redis.aclose()
    return best


def calls(
    pages: Pages, reader: uuid.UUID, first: date, last: date, page: list[bytes]
) -> dict[str, Callable[[], Awaitable[object]]]:
    def read() -> Awaitable[object]:
        return pages.read(reader, first, last, None, WANTED)

    def renderings() -> Awaitable[object]:
        return pages.renderings(page)

    async def both() -> None:
        await read()
        await renderings()

    return {
        f"timeline read (MULTI/EXEC, {WANTED} a bucket)": read,
        f"MGET of {len(page)} renderings + version": renderings,
        "both: the page's Redis reads": both,
    }


@contextlib.asynccontextmanager
async def redis_url(given: str | None) -> AsyncIterator[str]:
    if given is not None:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="gnbench-lean-") as folder:
        server = RedisServer(Path(folder))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


async def main(given_url: str | None, rounds: int) -> None:
    async with redis_url(given_url) as url:
        best = await measure(url, rounds)
    print("| call | redis-py (µs CPU) | lean (µs CPU) | saved |\n|---|---:|---:|---:|")
    for call, slow in best["redis-py"].items():
        fast = best["lean"][call]
        print(f"| {call} | {slow:.0f} | {fast:.0f} | {1 - fast / slow:.0%} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", help="An existing Redis to read from (default: a private one).")
    parser.add_argument("--rounds", type=int, default=3, help="Turns each client takes (default 3).")
    args = parser.parse_args()
    uvloop.run(main(args.redis_url, args.rounds))
