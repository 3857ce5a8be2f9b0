"""A ``goodnight worker`` SIGKILLed in the middle of a large fanout loses nothing and duplicates nothing.

PostgreSQL and a private redis-server. An author with thousands of active followers, each with a warm
timeline, clocks out a week of nights through the API. The first worker is killed while it is fanning them
out; once its lease runs out a second worker takes the same events over, and afterwards every follower's
timeline holds exactly what SQL says, and their feed pages served from Redis equal the SQL feed.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import sqlalchemy as sa
from fastapi import FastAPI

from goodnight.auth.tokens import Tokens
from goodnight.db import Database
from goodnight.jobs import outbox
from goodnight.kit.clock import utcnow
from goodnight.kit.ids import new_id
from goodnight.main import create_app
from goodnight.models import Follow, User
from goodnight.timeline import keys, repository
from goodnight.timeline.runtime import Timeline
from tests.support.api import Api, Member
from tests.support.databases import TEST_JWT_SECRET, TestDatabase, create_database, settings_for
from tests.support.outbox import (
    Placed,
    describe_difference,
    duplicates,
    outbox_count,
    redis_timelines,
    sql_timelines,
)
from tests.support.processes import clean_env
from tests.support.redis_server import RedisServer
from tests.support.times import ago, iso
from tests.support.workers import worker_process

FOLLOWERS = 3000
# Of those, how many also follow a second, smaller author (so timelines mix authors).
NEIGHBOUR_FOLLOWERS = 200
NIGHTS = 8
BATCH_SIZE = 50  # 60 pipelines per clock-out: plenty of room to die in the middle
LEASE_SECONDS = 2
FEED_SAMPLE = 20


@pytest_asyncio.fixture
async def postgres() -> AsyncIterator[TestDatabase]:
    created = await create_database("postgresql")
    yield created
    await created.drop()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


async def test_sigkilled_worker_mid_fanout_loses_and_duplicates_nothing(
    postgres: TestDatabase, private_redis: RedisServer, tmp_path: Path
) -> None:
    cached_app = create_app(settings_for(postgres.url, redis_url=private_redis.url, embedded_worker=False))
    sql_app = create_app(settings_for(postgres.url))
    async with (
        cached_app.router.lifespan_context(cached_app),
        sql_app.router.lifespan_context(sql_app),
        _client(cached_app) as cached_http,
        _client(sql_app) as sql_http,
    ):
        timeline: Timeline = cached_app.state.services.timeline
        database: Database = cached_app.state.services.database
        cached, sql = Api(cached_http), Api(sql_http)

        author, neighbour = await cached.register(), await cached.register()
        followers = await _seed_followers(database, author, neighbour)
        await _warm_markers(timeline, followers)
        nights = [await _night(cached, author, days_ago=6.6 - night * 0.8) for night in range(NIGHTS)]
        neighbour_nights = [await _night(cached, neighbour, days_ago=days) for days in (4.3, 1.3)]
        events = NIGHTS + len(neighbour_nights)
        assert await outbox_count(database) == events
        # Nothing has run yet: the followers' timelines are warm and empty.
        assert all(not entries for entries in (await redis_timelines(timeline.redis, followers)).values())

        env = clean_env(
            GOODNIGHT_DATABASE_URL=postgres.url,
            GOODNIGHT_REDIS_URL=private_redis.url,
            GOODNIGHT_FANOUT_BATCH_SIZE=str(BATCH_SIZE),
            GOODNIGHT_OUTBOX_LEASE_SECONDS=str(LEASE_SECONDS),
            GOODNIGHT_OUTBOX_POLL_SECONDS="0.1",
        )
        # Kill it in the middle of the middle night's fanout: the nights before it have reached everyone
        # (so the second worker re-applies them), the ones after it nobody.
        middle_day, middle_member = _placed(nights[NIGHTS // 2])
        with worker_process(tmp_path, env, log_name="first-worker.log") as first:

            async def halfway() -> bool:
                key = keys.bucket_key(followers[FOLLOWERS // 2], middle_day)
                return await timeline.redis.zscore(key, middle_member) is not None

            await _wait_for(halfway, alive=first.alive, what="the first worker to get halfway", log=first.log)
            first.kill()
        assert first.process.returncode == -9

        # The work is incomplete, and every event is still in the outbox, none given up on.
        expected = await sql_timelines(database, followers)
        partial = await redis_timelines(timeline.redis, followers)
        have = [_holders(partial, night) for night in nights]
        assert have[0] == FOLLOWERS
        assert 0 < have[NIGHTS // 2] < FOLLOWERS, have
        assert have[-1] == 0, f"the first worker got further than it should have before dying: {have}"
        assert sum(set(partial[reader]) == expected[reader] for reader in followers) == 0
        status = await _status(database)
        assert (status.pending + status.in_flight, status.dead) == (events, 0), status

        with worker_process(tmp_path, env, log_name="second-worker.log") as second:

            async def drained() -> bool:
                return await outbox_count(database) == 0

            await _wait_for(
                drained, alive=second.alive, what="the second worker to drain", log=second.log, interval=0.1
            )
            assert second.terminate() == 0, second.log()

        # Every follower's timeline is exactly what SQL says: nothing lost, nothing twice.
        expected = await sql_timelines(database, followers)
        healed = await redis_timelines(timeline.redis, followers)
        assert sum(len(entries) for entries in expected.values()) == (
            FOLLOWERS * NIGHTS + NEIGHBOUR_FOLLOWERS * len(neighbour_nights)
        )
        wrong = [
            describe_difference(reader, healed[reader], expected[reader])
            for reader in followers
            if set(healed[reader]) != expected[reader]
        ]
        assert wrong == [], f"{len(wrong)} timelines differ from SQL; first: {wrong[:3]}"
        doubled = {reader: found for reader in followers if (found := duplicates(healed[reader]))}
        assert doubled == {}

        # And the feed served from those timelines is the SQL feed, page for page.
        tokens = Tokens(TEST_JWT_SECRET, 3600)
        rng = random.Random(FOLLOWERS)
        sample = [*followers[:3], *followers[-3:], *rng.sample(followers[3:-3], FEED_SAMPLE - 6)]
        served = timeline.reader.served
        for reader in sample:
            member = Member(str(reader), "", tokens.issue(reader).token)
            expected_feed = await sql.whole_feed(member, per_page=5)
            assert len(expected_feed) == len(expected[reader])
            assert await cached.whole_feed(member, per_page=5) == expected_feed
        assert timeline.reader.served - served >= FEED_SAMPLE * 2, "pages were answered from SQL, not Redis"
        assert timeline.reader.declined == 0


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver/api/v1")


async def _seed_followers(database: Database, author: Member, neighbour: Member) -> list[uuid.UUID]:
    """Thousands of active followers, written straight to the database (the API would take minutes)."""
    now = utcnow()
    ids = [new_id() for _ in range(FOLLOWERS)]
    users = [
        {
            "id": follower,
            "username": f"fan{index:05d}",
            "username_key": f"fan{index:05d}",
            "password_hash": "not-a-login",
            "followers_count": 0,
            "followings_count": 2 if index < NEIGHBOUR_FOLLOWERS else 1,
            "last_active_at": now,  # active: fanout reaches them
            "created_at": now,
            "updated_at": now,
        }
        for index, follower in enumerate(ids)
    ]
    follows = [_follow(follower, uuid.UUID(author.id), now) for follower in ids]
    follows += [_follow(follower, uuid.UUID(neighbour.id), now) for follower in ids[:NEIGHBOUR_FOLLOWERS]]
    async with database.writer() as session:
        await session.execute(sa.insert(User), users)
        await session.execute(sa.insert(Follow), follows)
        for who, count in ((author, FOLLOWERS), (neighbour, NEIGHBOUR_FOLLOWERS)):
            await session.execute(
                sa.update(User).where(User.id == uuid.UUID(who.id)).values(followers_count=count)
            )
        await session.commit()
    return sorted(ids)  # the order fanout walks them in


def _follow(follower: uuid.UUID, followed: uuid.UUID, now: datetime) -> dict[str, Any]:
    return {
        "follower_id": follower,
        "followed_id": followed,
        "active": True,
        "followed_at": now,
        "created_at": now,
        "updated_at": now,
    }


async def _warm_markers(timeline: Timeline, readers: list[uuid.UUID]) -> None:
    """Mark every reader's (empty, and correctly so) timeline warm, as a rebuild would, in one pipeline."""
    pipe = timeline.redis.pipeline(transaction=False)
    for reader in readers:
        pipe.hset(keys.marker_key(reader), "seen", str(time.time()))
        pipe.expire(keys.marker_key(reader), 3600)
    await pipe.execute()
    # The celebrity set is known (and empty): reads need not rebuild it.
    await timeline.store.celebrities.load([])


async def _night(api: Api, who: Member, *, days_ago: float) -> dict[str, Any]:
    start = ago(days=days_ago)
    return await api.sleep(who, iso(start), iso(start + timedelta(hours=7, minutes=days_ago * 10)))


def _placed(record: dict[str, Any]) -> tuple[date, bytes]:
    start = datetime.fromisoformat(record["clocked_in_at"].replace("Z", "+00:00"))
    return repository.entry(uuid.UUID(record["id"]), record["duration"], start)


def _holders(timelines: dict[uuid.UUID, list[Placed]], record: dict[str, Any]) -> int:
    """How many readers have ``record`` in their timeline."""
    placed = _placed(record)
    return sum(placed in entries for entries in timelines.values())


async def _status(database: Database) -> outbox.OutboxStatus:
    async with database.reader() as session:
        return await outbox.status(session)


async def _wait_for(
    condition: Callable[[], Awaitable[bool]],
    *,
    alive: Callable[[], bool],
    what: str,
    log: Callable[[], str],
    within: float = 60.0,
    interval: float = 0.002,
) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert alive(), f"the worker exited while waiting for {what}:\n{log()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log()}"
        await asyncio.sleep(interval)
