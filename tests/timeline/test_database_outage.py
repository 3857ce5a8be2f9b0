"""Reads survive a database outage.

While PostgreSQL is unreachable, feed pages of warm Redis timelines are still served from Redis, judged on
the last known outbox state; writes answer 503 ``service_unavailable``; when the database returns, everything
recovers without a restart. Every test runs its own PostgreSQL server and its own redis-server (the shared
ones must never be stopped), and stops the database hard, as a crash would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import sqlalchemy as sa
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from goodnight.db import Database
from goodnight.jobs import outbox
from goodnight.migrate import upgrade_to_head
from goodnight.models import OutboxEvent
from goodnight.timeline import catch_up, keys
from goodnight.timeline.catch_up import RECHECK_SECONDS
from goodnight.timeline.outage import DatabaseAway, background_failures, querying
from goodnight.timeline.reader import TimelineReader
from goodnight.timeline.store import TimelineStore
from tests.support.api import Api, Member
from tests.support.apps import (
    CELEBRITY_THRESHOLD,
    AppTimeline,
    client_for,
    running,
    timeline_of,
    timeline_settings,
)
from tests.support.databases import TEST_JWT_SECRET, settings_for, truncate
from tests.support.envelope import assert_error
from tests.support.logs import app_logs
from tests.support.outbox import insert_events
from tests.support.postgres_server import PostgresServer
from tests.support.processes import Server, clean_env, serving
from tests.support.redis_server import RedisServer
from tests.support.times import ago, iso
from tests.timeline.test_timeline import ids, night

# Generous: a request that takes this long while the database is down is a hang, and fails the test.
REQUEST_TIMEOUT_S = 20.0
OUTAGE_S = 3.0
SETTLE_TIMEOUT_S = 30.0


@pytest_asyncio.fixture(scope="module")
async def postgres_server() -> AsyncIterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        await upgrade_to_head(settings_for(server.url))
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def redis_server_of_module() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest_asyncio.fixture
async def postgres(postgres_server: PostgresServer) -> PostgresServer:
    """The private PostgreSQL, running and empty."""
    if not postgres_server.running:
        postgres_server.start()
    engine = create_async_engine(postgres_server.url)
    try:
        await truncate(engine)
    finally:
        await engine.dispose()
    return postgres_server


@pytest_asyncio.fixture
async def redis_store(redis_server_of_module: RedisServer) -> AsyncIterator[TimelineStore]:
    """The test's own view of the private Redis (emptied first): which timelines are warm."""
    client = Redis.from_url(redis_server_of_module.url)
    try:
        await client.flushall()
        yield TimelineStore(client)
    finally:
        await client.aclose()


@pytest.fixture
def private_redis(redis_store: TimelineStore, redis_server_of_module: RedisServer) -> RedisServer:
    return redis_server_of_module


@dataclass
class Cast:
    """Two readers following two authors and a celebrity (5 followers > threshold 3), whose feeds do not
    change during the load; and writers followed by a watcher, whose nights must all reach the watcher."""

    readers: list[Member]
    writers: list[Member]
    watcher: Member
    feeds: dict[str, list[str]]  # each reader's expected feed, in order


async def build_cast(api: Api) -> Cast:
    alice, bob, star, *fans = [await api.register() for _ in range(6)]
    readers = [await api.register() for _ in range(2)]
    writers = [await api.register() for _ in range(2)]
    watcher = await api.register()
    follows = [(readers[0], [alice, star]), (readers[1], [alice, bob, star])]
    for reader, followees in follows:
        for followee in followees:
            await api.follow(reader, followee)
    for fan in fans:
        await api.follow(fan, star)
    for writer in writers:
        await api.follow(watcher, writer)
    nights = {
        alice.id: [await night(api, alice, days, 6 + days / 2) for days in (5, 2)],
        bob.id: [await night(api, bob, days, 7 + days / 3) for days in (4, 1)],
        star.id: [await night(api, star, days, 8 - days / 4) for days in (3, 1.5)],
    }
    feeds = {}
    for reader, followees in follows:
        records = [record for followee in followees for record in nights[followee.id]]
        feeds[reader.id] = ids(sorted(records, key=lambda record: record["duration"], reverse=True))
    return Cast(readers, writers, watcher, feeds)


def uuid_of(member: Member) -> uuid.UUID:
    return uuid.UUID(member.id)


async def is_warm(store: TimelineStore, readers: list[Member]) -> bool:
    """Every reader's timeline is built and the celebrity set is ready: pages can come from Redis."""
    warm = [await store.buckets.is_warm(uuid_of(reader)) for reader in readers]
    return all(warm) and await store.celebrities.members() is not None


async def outbox_drained(postgres: PostgresServer) -> bool:
    engine = create_async_engine(postgres.url)
    try:
        async with engine.connect() as connection:
            pending = await connection.scalar(
                sa.select(sa.func.count()).select_from(OutboxEvent).where(OutboxEvent.dead_at.is_(None))
            )
            return pending == 0
    finally:
        await engine.dispose()


async def warm_up(api: Api, store: TimelineStore, cast: Cast, postgres: PostgresServer) -> None:
    """Read until every reader's timeline is warm (first reads come from SQL while they are built) and the
    worker has applied every event of the cast's making, then read once more, so the server holds the
    celebrity snapshot and each reader's celebrity follows. (An event applied later, such as the star's
    record reaching the celebrity set, moves the snapshot's version: the next page must reload it, which
    needs the database, and would answer 503 if the outage had begun.)"""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        for reader in cast.readers:
            assert ids(await api.whole_feed(reader, per_page=2)) == cast.feeds[reader.id]
        if await is_warm(store, cast.readers) and await outbox_drained(postgres):
            break
        assert time.monotonic() < deadline, "the readers' timelines never became warm"
        await asyncio.sleep(0.1)
    for reader in cast.readers:
        assert ids(await api.whole_feed(reader, per_page=2)) == cast.feeds[reader.id]


# --- Mixed load across the outage ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One request: the database's state when it was sent and when it was answered, and the answer."""

    sent: str
    answered: str
    status: int  # 0: no answer at all (timeout, connection error)
    code: str | None = None  # the error code of an error answer
    retry_after: str | None = None
    detail: str = ""

    @property
    def during_outage(self) -> bool:
        return self.sent == self.answered == "down"


@dataclass
class Load:
    """Readers scrolling their feeds and writers recording nights, in parallel, until ``stop`` is set."""

    http: httpx.AsyncClient
    cast: Cast
    phase: str = "up"  # up -> stopping -> down -> starting -> back
    reads: list[Outcome] = field(default_factory=list)
    writes: list[Outcome] = field(default_factory=list)
    acknowledged: dict[str, list[str]] = field(default_factory=dict)  # writer id -> completed record ids
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def call(self, method: str, url: str, who: Member, **kwargs: Any) -> tuple[Outcome, Any]:
        sent = self.phase
        try:
            response = await self.http.request(method, url, headers=who.headers, **kwargs)
        except httpx.HTTPError as exc:
            return Outcome(sent, self.phase, 0, detail=repr(exc)), None
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        code = error["code"] if error else None
        retry_after = response.headers.get("retry-after")
        detail = response.text[:300] if response.status_code >= 400 else ""
        outcome = Outcome(sent, self.phase, response.status_code, code, retry_after, detail)
        return outcome, body

    async def scroll(self, reader: Member) -> None:
        """Read the whole feed page by page; every page must succeed and the whole feed must be right."""
        while not self.stop.is_set():
            items: list[str] = []
            cursor = None
            while True:
                params: dict[str, Any] = {"per_page": 2, **({"cursor": cursor} if cursor else {})}
                outcome, body = await self.call("GET", "/sleep_records/followings", reader, params=params)
                if outcome.status != 200:
                    self.reads.append(outcome)
                    break
                items += ids(body["data"])
                cursor = body["pagination"]["next_cursor"]
                if cursor is None:
                    wrong = "" if items == self.cast.feeds[reader.id] else f"wrong feed {items}"
                    self.reads.append(Outcome(outcome.sent, outcome.answered, 200, detail=wrong))
                    break
            await asyncio.sleep(0.02)

    async def write(self, writer: Member) -> None:
        """Clock in, clock out, again and again, each time later than the last (back-dated, inside the
        window). A 503 may hide a commit (the connection died mid-commit): the next answer tells."""
        acknowledged = self.acknowledged.setdefault(writer.id, [])
        base = ago(days=5)
        clocked_in = False
        for step in range(200):
            if self.stop.is_set():
                return
            at = {
                "clocked_out_at" if clocked_in else "clocked_in_at": iso(base + timedelta(minutes=30 * step))
            }
            url = "/sleep_records/clock_out" if clocked_in else "/sleep_records/clock_in"
            outcome, body = await self.call("POST", url, writer, json=at)
            self.writes.append(outcome)
            if outcome.status == 200:
                acknowledged.append(body["sleep_record"]["id"])
            if outcome.status in (200, 201):
                clocked_in = not clocked_in
            elif outcome.code in ("already_clocked_in", "not_clocked_in"):  # a 503 that had committed
                clocked_in = outcome.code == "already_clocked_in"
            await asyncio.sleep(0.05)

    def acknowledged_since(self, phase: str) -> int:
        return sum(1 for outcome in self.writes if outcome.sent == phase and outcome.status in (200, 201))


async def until(condition: Any, message: str, within: float = SETTLE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.05)


async def completed_records(postgres: PostgresServer) -> set[str]:
    engine = create_async_engine(postgres.url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                sa.text("SELECT id FROM sleep_records WHERE duration_s IS NOT NULL")
            )
            return {str(uuid.UUID(str(row[0]))) for row in rows}
    finally:
        await engine.dispose()


def serve_env(postgres: PostgresServer, private_redis: RedisServer) -> dict[str, str]:
    return clean_env(
        GOODNIGHT_DATABASE_URL=postgres.url,
        GOODNIGHT_REDIS_URL=private_redis.url,
        GOODNIGHT_JWT_SECRET=TEST_JWT_SECRET,
        GOODNIGHT_CELEBRITY_THRESHOLD=str(CELEBRITY_THRESHOLD),
        # Waiting for a database connection is cut short: requests are refused, never queued for long.
        GOODNIGHT_DATABASE_POOL_TIMEOUT_SECONDS="1",
        # A loaded test machine can leave the worker a second behind; the lag rule itself is tested below.
        GOODNIGHT_TIMELINE_MAX_LAG_SECONDS="10",
        # And take more than half a second to open a local connection (see timeline_settings).
        GOODNIGHT_REDIS_CONNECT_TIMEOUT_SECONDS="5",
    )


async def test_warm_feeds_are_served_while_the_database_is_down_and_everything_recovers(
    tmp_path: Path, postgres: PostgresServer, private_redis: RedisServer, redis_store: TimelineStore
) -> None:
    workdir = tmp_path / "serve"
    workdir.mkdir()
    with serving(workdir, serve_env(postgres, private_redis)) as server:
        async with httpx.AsyncClient(base_url=server.api_url, timeout=REQUEST_TIMEOUT_S) as http:
            api = Api(http)
            cast = await build_cast(api)
            await warm_up(api, redis_store, cast, postgres)
            await outage_under_load(server, postgres, Load(http, cast), api)


async def outage_under_load(server: Server, postgres: PostgresServer, load: Load, api: Api) -> None:
    cast = load.cast
    tasks = [
        *(asyncio.create_task(load.scroll(reader)) for reader in cast.readers),
        *(asyncio.create_task(load.write(writer)) for writer in cast.writers),
    ]
    try:
        await until(lambda: load.acknowledged_since("up") >= 4, "no write succeeded before the outage")
        load.phase = "stopping"
        await asyncio.to_thread(postgres.stop)
        load.phase = "down"
        await asyncio.sleep(OUTAGE_S)
        load.phase = "starting"
        await asyncio.to_thread(postgres.start)
        load.phase = "back"
        await until(
            lambda: load.acknowledged_since("back") >= 2 * len(cast.writers),
            "writes did not succeed again after the database came back",
        )
    finally:
        load.stop.set()
        await asyncio.gather(*tasks)

    # Reads: every page of every scroll answered 200 with the right feed, before, during and after.
    failed_reads = [outcome for outcome in load.reads if outcome.status != 200 or outcome.detail]
    assert not failed_reads, failed_reads[:10]
    assert sum(1 for outcome in load.reads if outcome.during_outage) >= 10, "too few reads during the outage"
    # Writes: never a 500 or a hang; while the database was down, 503 service_unavailable with Retry-After.
    broken = [
        outcome
        for outcome in load.writes
        if outcome.status == 0 or (outcome.status >= 500 and outcome.code != "service_unavailable")
    ]
    assert not broken, broken[:10]
    refused = [outcome for outcome in load.writes if outcome.during_outage]
    assert len(refused) >= 4, f"too few writes during the outage: {load.writes}"
    assert all(
        outcome.status == 503 and outcome.code == "service_unavailable" and outcome.retry_after
        for outcome in refused
    ), refused
    assert load.acknowledged_since("back") > 0

    # Every acknowledged write is in the database, and reaches the watcher's feed: no restart needed.
    acknowledged = {record for records in load.acknowledged.values() for record in records}
    assert acknowledged <= await completed_records(postgres)

    async def watcher_sees_everything() -> bool:
        return acknowledged <= set(ids(await api.whole_feed(cast.watcher, per_page=50)))

    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not await watcher_sees_everything():
        assert time.monotonic() < deadline, "acknowledged nights never reached the watcher's feed"
        await asyncio.sleep(0.2)
    for reader in cast.readers:
        assert ids(await api.whole_feed(reader, per_page=2)) == cast.feeds[reader.id]
    assert server.process.poll() is None, "the server did not survive the outage"
    assert "unhandled error" not in server.log(), server.log()[-5000:]


# --- The rules, in process: what is judged on the last known state, and what needs the database ----------


@dataclass
class Rig:
    app: FastAPI
    timeline: AppTimeline
    api: Api

    @property
    def reader(self) -> TimelineReader:
        return self.timeline.reader

    @property
    def database(self) -> Database:
        found: Database = self.app.state.services.database
        return found


@contextlib.asynccontextmanager
async def app_on(postgres: PostgresServer, redis: RedisServer) -> AsyncIterator[Rig]:
    """The app in process, as one API process (no embedded worker: the test drains the outbox)."""
    settings = timeline_settings(postgres.url, redis.url, database_pool_timeout_seconds=1)
    async with running(settings) as app, client_for(app) as http:
        timeline = timeline_of(app)
        try:
            yield Rig(app, timeline, Api(http))
        finally:
            await timeline.reader.drain_background()


@dataclass
class Readers:
    """``first`` and ``second`` follow an author and a celebrity (5 followers > threshold 3); ``cold``
    follows the author and is never read, so it has no timeline in Redis."""

    first: Member
    second: Member
    cold: Member
    author: Member
    feeds: dict[str, list[str]]


async def readers_with_a_celebrity(rig: Rig) -> Readers:
    api = rig.api
    author, star, *fans = [await api.register() for _ in range(5)]
    first, second, cold = [await api.register() for _ in range(3)]
    for who, whom in [(first, author), (first, star), (second, author), (second, star), (cold, author)]:
        await api.follow(who, whom)
    for fan in fans:
        await api.follow(fan, star)
    authored = [await night(api, author, days, 6 + days / 2) for days in (4, 1)]  # 8 and 6.5 hours
    starred = [await night(api, star, days, 9 - days / 4) for days in (3, 2)]  # 8.25 and 8.5 hours
    await rig.timeline.worker.drain()
    both = ids(sorted([*authored, *starred], key=lambda record: record["duration"], reverse=True))
    feeds = {first.id: both, second.id: both, cold.id: ids(authored)}
    return Readers(first, second, cold, author, feeds)


async def warm(rig: Rig, *readers: Member) -> None:
    for _ in range(2):  # the first read builds the timeline, the second the celebrity set
        for reader in readers:
            await rig.api.feed(reader)
        await rig.reader.drain_background()


async def read_from_redis(rig: Rig, reader: Member, expected: list[str]) -> None:
    served, declined = rig.reader.served, rig.reader.declined
    assert ids(await rig.api.whole_feed(reader, per_page=2)) == expected
    assert rig.reader.declined == declined, "the feed came from SQL"
    assert rig.reader.served > served


async def assert_unavailable(rig: Rig, reader: Member) -> None:
    """Redis declined the page, and SQL could not answer: 503 with Retry-After, never a 500."""
    declined = rig.reader.declined
    response = await rig.api.feed(reader, per_page=2)
    assert_error(response, 503, "service_unavailable")
    assert response.headers.get("retry-after"), response.headers
    assert rig.reader.declined == declined + 1


@dataclass
class Calls:
    count: int = 0


@pytest.fixture
def lag_checks(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Counts the outbox lag queries the reader sends (the real query still runs)."""
    calls = Calls()
    real = outbox.oldest_pending_age

    async def counted(session: AsyncSession) -> float | None:
        calls.count += 1
        return await real(session)

    monkeypatch.setattr(outbox, "oldest_pending_age", counted)
    return calls


def timeline_records(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [record for record in records if record.name == "goodnight.timeline"]


async def test_a_failed_lag_check_keeps_the_last_answer_and_is_retried_only_on_the_period(
    postgres: PostgresServer, private_redis: RedisServer, lag_checks: Calls
) -> None:
    async with app_on(postgres, private_redis) as rig:
        cast = await readers_with_a_celebrity(rig)
        await warm(rig, cast.first)
        await read_from_redis(rig, cast.first, cast.feeds[cast.first.id])
        # Last seen two hours ago: every page now refreshes the reader's activity, which needs the database.
        stale = str(time.time() - 7200)
        await rig.timeline.redis.hset(keys.marker_key(uuid.UUID(cast.first.id)), "seen", stale)

        postgres.stop()
        with app_logs() as records:
            checks, started, scrolls = lag_checks.count, time.monotonic(), 0
            while scrolls < 20 or time.monotonic() - started < 3 * RECHECK_SECONDS:
                await read_from_redis(rig, cast.first, cast.feeds[cast.first.id])
                scrolls += 1
            elapsed = time.monotonic() - started
            for _ in range(3):
                await assert_unavailable(rig, cast.cold)  # a cold timeline needs SQL, which cannot answer
            await rig.reader.drain_background()
        log = timeline_records(records)
        # Two pages a scroll, yet one failed lag query per period (and the one the first page may start).
        assert lag_checks.count - checks <= 2 + elapsed / RECHECK_SECONDS
        # The outage is reported once; the failing activity refreshes and rebuild as one line, no traceback.
        assert any("serving warm timelines from Redis" in record.getMessage() for record in log), log
        assert len(log) <= 2, [record.getMessage() for record in log]
        assert all(record.levelno == logging.WARNING and not record.exc_info for record in log), log

        postgres.start()  # the same process recovers: the next lag check reaches the database again
        assert ids(await rig.api.whole_feed(cast.cold, per_page=2)) == cast.feeds[cast.cold.id]
        late = await night(rig.api, cast.author, 0.5, 3)  # writes are accepted again
        await rig.timeline.worker.drain()
        await rig.reader.drain_background()
        await read_from_redis(rig, cast.cold, [*cast.feeds[cast.cold.id], late["id"]])
        await read_from_redis(rig, cast.first, [*cast.feeds[cast.first.id], late["id"]])


async def test_a_backlog_known_before_the_outage_keeps_feeds_off_redis_during_it(
    postgres: PostgresServer, private_redis: RedisServer
) -> None:
    async with app_on(postgres, private_redis) as rig:
        cast = await readers_with_a_celebrity(rig)
        await warm(rig, cast.first)
        await read_from_redis(rig, cast.first, cast.feeds[cast.first.id])
        # An event no worker has applied for ten minutes: the timelines are behind, SQL answers.
        stuck = {
            "kind": "sleep_completed",
            "payload": {"record_id": str(uuid.uuid4())},
            "created_at": ago(minutes=10),
        }
        await insert_events(rig.database, [stuck])
        await asyncio.sleep(RECHECK_SECONDS)
        declined = rig.reader.declined
        assert ids(await rig.api.whole_feed(cast.first, per_page=2)) == cast.feeds[cast.first.id]
        assert rig.reader.declined > declined

        postgres.stop()
        # Behind when last seen: still behind, as far as anyone can tell.
        await assert_unavailable(rig, cast.first)
        await asyncio.sleep(RECHECK_SECONDS)
        await assert_unavailable(rig, cast.first)

        postgres.start()
        async with rig.database.writer() as session:
            await session.execute(sa.delete(OutboxEvent))
            await session.commit()
        await asyncio.sleep(RECHECK_SECONDS)
        await read_from_redis(rig, cast.first, cast.feeds[cast.first.id])


async def test_a_process_that_cannot_judge_the_lag_answers_503_until_the_database_is_back(
    postgres: PostgresServer, private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer at all (the process served no feed before the outage), or one already old when the outage
    was noticed (it served none for a while): the backlog at the moment the database went away is unknown."""
    monkeypatch.setattr(catch_up, "LAST_ANSWER_TRUSTED_SECONDS", 0.2)
    async with app_on(postgres, private_redis) as rig:
        cast = await readers_with_a_celebrity(rig)
        await warm(rig, cast.first)
        await read_from_redis(rig, cast.first, cast.feeds[cast.first.id])
    async with app_on(postgres, private_redis) as rig:  # another process, which has served no feed yet
        postgres.stop()
        await assert_unavailable(rig, cast.first)
        postgres.start()
        await asyncio.sleep(RECHECK_SECONDS)
        await read_from_redis(rig, cast.first, cast.feeds[cast.first.id])

        await asyncio.sleep(RECHECK_SECONDS + 0.2)  # no feed read for a while: the answer grows old
        postgres.stop()
        await assert_unavailable(rig, cast.first)
        postgres.start()
        await asyncio.sleep(RECHECK_SECONDS)
        await read_from_redis(rig, cast.first, cast.feeds[cast.first.id])


async def test_a_page_that_needs_the_database_answers_503_and_redis_stays_trusted(
    postgres: PostgresServer, private_redis: RedisServer
) -> None:
    async with app_on(postgres, private_redis) as rig:
        cast = await readers_with_a_celebrity(rig)
        await warm(rig, cast.first, cast.second)
        for reader in (cast.first, cast.second):
            await read_from_redis(rig, reader, cast.feeds[reader.id])
    # Another process, which has read only the first reader's feed: which celebrities the second one
    # follows is not known here.
    async with app_on(postgres, private_redis) as rig:
        await read_from_redis(rig, cast.first, cast.feeds[cast.first.id])
        postgres.stop()
        await assert_unavailable(rig, cast.second)
        # Both raise OSError, but the database's failure was not taken for Redis's: no breaker, no suspicion.
        assert rig.reader.gate.breaker.allows()
        await read_from_redis(rig, cast.first, cast.feeds[cast.first.id])
        # A celebrity's records changed: the snapshot must be reloaded, from the database.
        await rig.timeline.redis.incr(keys.CELEBRITIES_VERSION)
        await assert_unavailable(rig, cast.first)
        await assert_unavailable(rig, cast.first)

        postgres.start()
        for reader in (cast.first, cast.second):
            await read_from_redis(rig, reader, cast.feeds[reader.id])


# --- Telling an outage from a bug -------------------------------------------------------------------------


async def test_only_an_unreachable_database_is_taken_for_an_outage_on_the_read_path() -> None:
    with pytest.raises(DatabaseAway):
        async with querying():
            raise ConnectionRefusedError("connect call failed")
    with pytest.raises(ValueError, match="a bug"):
        async with querying():
            raise ValueError("a bug")


def test_background_failures_log_a_bug_every_time_and_an_outage_once() -> None:
    logger = logging.getLogger("goodnight.timeline")
    failures = background_failures(logger, quiet_seconds=60)
    with app_logs() as records:
        for _ in range(3):
            failures.report(ConnectionRefusedError("connect call failed"), "rebuild failed for %s", "someone")
        for _ in range(2):
            failures.report(ValueError("a bug"), "rebuild failed for %s", "someone")
    warnings = [record for record in records if record.levelno == logging.WARNING]
    errors = [record for record in records if record.levelno == logging.ERROR]
    assert len(warnings) == 1, warnings
    assert not warnings[0].exc_info
    assert "rebuild failed for someone: ConnectionRefusedError" in warnings[0].getMessage()
    assert len(errors) == 2
    assert all(record.exc_info for record in errors)
