"""Measure the Redis timeline against the SQL feed, in one run, through the app (in process).

    GOODNIGHT_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1/goodnight_bench \\
    GOODNIGHT_REDIS_URL=redis://127.0.0.1:6379/3 uv run python bench/timeline_probe.py

The database named in the URL is dropped and recreated, and the Redis database is flushed. Prints a Markdown
report: feed page latency (SQL vs Redis) for readers following 10, 150 and 5,000 people, fanout throughput of
one worker, bytes per timeline entry, and a celebrity's clock-out against a normal one.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from goodnight.auth.passwords import Passwords
from goodnight.config import Settings
from goodnight.feed.position import POSITION_SIZE
from goodnight.kit.clock import utcnow
from goodnight.kit.ids import new_id
from goodnight.main import create_app
from goodnight.migrate import upgrade_to_head
from goodnight.models import Follow, SleepRecord, User

READERS = (10, 150, 5000)
NIGHTS = 7
PAGES = 200


async def recreate_database(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise SystemExit("this probe expects a PostgreSQL GOODNIGHT_DATABASE_URL")
    admin = create_async_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        await connection.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    await admin.dispose()


async def seed(settings: Settings, authors: int, rng: random.Random) -> dict[str, Any]:
    """Authors with a week of nights each; readers following the first N of them; one celebrity."""
    engine = create_async_engine(settings.database_url)
    password_hash = await Passwords(settings).hash("benchmark-password")
    now = utcnow()

    def user(name: str, followers: int = 0, followings: int = 0) -> dict[str, Any]:
        return {
            "id": new_id(),
            "username": name,
            "username_key": name,
            "name": None,
            "password_hash": password_hash,
            "followers_count": followers,
            "followings_count": followings,
            "last_active_at": now,
            "created_at": now,
            "updated_at": now,
        }

    author_rows = [user(f"author{index}", followers=len(READERS)) for index in range(authors)]
    readers = {count: user(f"reader{count}", followings=count) for count in READERS}
    fans = [user(f"fan{index}", followings=1) for index in range(2000)]
    # The star is followed by every fan, above the celebrity threshold; the normal author by half of them.
    star = user("star", followers=len(fans))
    normal = user("normal", followers=len(fans) // 2)
    records, follows = [], []
    for author in author_rows:
        for night in range(NIGHTS, 0, -1):
            start = now - timedelta(days=night, hours=rng.uniform(-2, 2))
            length = rng.randint(4 * 3600, 10 * 3600)
            records.append(
                {
                    "id": new_id(),
                    "user_id": author["id"],
                    "clocked_in_at": start,
                    "clocked_out_at": start + timedelta(seconds=length),
                    "duration_s": length,
                    "open_flag": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    for count, reader in readers.items():
        for author in author_rows[:count]:
            follows.append(_follow(reader["id"], author["id"], now))
    for index, fan in enumerate(fans):
        follows.append(_follow(fan["id"], star["id"], now))
        if index % 2 == 0:
            follows.append(_follow(fan["id"], normal["id"], now))
    async with engine.begin() as connection:
        everyone = [*author_rows, *readers.values(), *fans, star, normal]
        for chunk in range(0, len(everyone), 5000):
            await connection.execute(sa.insert(User), everyone[chunk : chunk + 5000])
        for chunk in range(0, len(follows), 5000):
            await connection.execute(sa.insert(Follow), follows[chunk : chunk + 5000])
        for chunk in range(0, len(records), 5000):
            await connection.execute(sa.insert(SleepRecord), records[chunk : chunk + 5000])
    await engine.dispose()
    return {"readers": readers, "star": star, "normal": normal, "records": len(records)}


def _follow(follower: uuid.UUID, followed: uuid.UUID, at: Any) -> dict[str, Any]:
    return {
        "follower_id": follower,
        "followed_id": followed,
        "active": True,
        "followed_at": at,
        "created_at": at,
        "updated_at": at,
    }


async def timed(action: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)  # noqa: S311  (reproducible data, not secrets)
    base = Settings()
    await recreate_database(base.database_url)
    await upgrade_to_head(base)
    data = await seed(base, max(READERS), rng)
    settings = base.model_copy(update={"celebrity_threshold": 1500, "embedded_worker": False})
    sql_settings = base.model_copy(update={"redis_url": None})
    cached_app, sql_app = create_app(settings), create_app(sql_settings)
    report: list[str] = []
    async with cached_app.router.lifespan_context(cached_app), sql_app.router.lifespan_context(sql_app):
        timeline = cached_app.state.services.timeline
        await timeline.redis.flushdb()
        tokens = cached_app.state.services.tokens
        cached = httpx.AsyncClient(transport=httpx.ASGITransport(app=cached_app), base_url="http://b/api/v1")
        plain = httpx.AsyncClient(transport=httpx.ASGITransport(app=sql_app), base_url="http://b/api/v1")
        report.append(f"{data['records']} sleep records; feed page = 10 items; median of {PAGES} requests\n")
        report.append(
            "| followings | SQL page 1 (ms) | Redis page 1 (ms) | SQL deep page (ms) | Redis deep page (ms) |"
        )
        report.append("|---:|---:|---:|---:|---:|")
        for count, reader in data["readers"].items():
            headers = {"Authorization": f"Bearer {tokens.issue(reader['id']).token}"}
            await timeline.reader.rebuilds.rebuild(reader["id"])
            await cached.get("/sleep_records/followings", headers=headers)
            await timeline.reader.drain_background()
            deep = await _deep_cursor(plain, headers)
            row = []
            for client, params in ((plain, {}), (cached, {}), (plain, deep), (cached, deep)):
                samples = await timed(
                    lambda c=client, p=params, h=headers: c.get(
                        "/sleep_records/followings", params=p, headers=h
                    ),
                    PAGES,
                )
                row.append(f"{p50(samples):.2f}")
            report.append(f"| {count} | " + " | ".join(row) + " |")
        served = timeline.reader.served
        report.append(f"\nPages served from Redis: {served} (declined: {timeline.reader.declined})")

        # Fanout throughput: one worker, 1,000 active followers, one clock-out event at a time.
        fans = await _fans(settings, data["normal"]["id"])
        normal_ms, star_ms, normal_request, star_request = [], [], [], []
        for author, handler_samples, request_samples in (
            (data["normal"], normal_ms, normal_request),
            (data["star"], star_ms, star_request),
        ):
            headers = {"Authorization": f"Bearer {tokens.issue(author['id']).token}"}
            for night in range(5):
                start = utcnow() - timedelta(hours=30 - night * 5)
                await cached.post(
                    "/sleep_records/clock_in", json={"clocked_in_at": start.isoformat()}, headers=headers
                )
                request_samples += await timed(
                    lambda h=headers, s=start: cached.post(
                        "/sleep_records/clock_out",
                        json={"clocked_out_at": (s + timedelta(hours=4)).isoformat()},
                        headers=h,
                    ),
                    1,
                )
                handler_samples += await timed(cached_app.state.services.jobs.worker.drain, 1)
        entries_per_second = len(fans) / (p50(normal_ms) / 1000)
        report.append(
            f"\nFanout, one worker: {len(fans)} followers per clock-out in {p50(normal_ms):.1f} ms "
            f"= {entries_per_second:,.0f} timeline entries/s (batches of {settings.fanout_batch_size},"
            " one pipeline each)"
        )
        report.append(
            f"Clock-out request p50: normal {p50(normal_request):.2f} ms, celebrity "
            f"{p50(star_request):.2f} ms; background work p50: normal {p50(normal_ms):.1f} ms, "
            f"celebrity {p50(star_ms):.1f} ms"
        )

        # Memory: bytes per entry over every timeline bucket.
        total_bytes, total_entries = 0, 0
        async for key in timeline.redis.scan_iter(match="gn:tl:*", count=1000):
            total_bytes += await timeline.redis.memory_usage(key) or 0
            total_entries += await timeline.redis.zcard(key)
        report.append(
            f"Timeline memory: {total_entries} entries in {total_bytes:,} bytes = "
            f"{total_bytes / max(total_entries, 1):.1f} bytes/entry (MEMORY USAGE, keys included; "
            f"members are {POSITION_SIZE} bytes)"
        )
        await cached.aclose()
        await plain.aclose()
    print("\n".join(report))


async def _deep_cursor(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    """The cursor of page 5 (or the last page for small feeds)."""
    params: dict[str, str] = {}
    for _ in range(4):
        page = (await client.get("/sleep_records/followings", params=params, headers=headers)).json()
        if page["pagination"]["next_cursor"] is None:
            break
        params = {"cursor": page["pagination"]["next_cursor"]}
    return params


async def _fans(settings: Settings, author_id: uuid.UUID) -> list[uuid.UUID]:
    engine = create_async_engine(settings.database_url)
    async with engine.connect() as connection:
        rows = await connection.execute(sa.select(Follow.follower_id).where(Follow.followed_id == author_id))
        fans = [row[0] for row in rows]
    await engine.dispose()
    return fans


if __name__ == "__main__":
    asyncio.run(main())
