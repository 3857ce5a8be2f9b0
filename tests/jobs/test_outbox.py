"""The transactional outbox, on SQLite, PostgreSQL and MariaDB: events are written with their change and only
then; failures back off and end up parked as dead, never crashing a worker; a dead worker's lease runs out and
another worker takes the work; several workers draining one outbox apply every event exactly once; and the
operator commands (``goodnight outbox status / retry-dead``, ``goodnight worker``) do what they say."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio
import sqlalchemy as sa
from fastapi import FastAPI

from goodnight.db import Database
from goodnight.deps import Services
from goodnight.jobs import outbox
from goodnight.jobs.publish import Events
from goodnight.jobs.worker import Worker
from goodnight.kit.clock import utcnow
from goodnight.models import Follow, SleepRecord
from goodnight.sleep import service as sleep_service
from goodnight.socials import service as socials_service
from tests.support.api import Api, Member
from tests.support.apps import AppTimeline
from tests.support.databases import TestDatabase, create_database, settings_for, truncate
from tests.support.envelope import assert_error
from tests.support.outbox import (
    Placed,
    describe_difference,
    duplicates,
    insert_events,
    make_ready,
    outbox_count,
    outbox_row,
    outbox_rows,
    record_id_of,
    records_by_author,
    redis_timelines,
    sql_timelines,
)
from tests.support.processes import clean_env, run_cli
from tests.support.redis_server import RedisServer
from tests.support.times import ago, iso
from tests.support.workers import worker_process


@pytest_asyncio.fixture
async def db(services: Services) -> Database:
    """The test database with an empty outbox (and no other rows)."""
    await truncate(services.database.engine)
    return services.database


def uid(member: Member) -> uuid.UUID:
    return uuid.UUID(member.id)


def nowhere(count: int) -> list[dict[str, Any]]:
    """Well-formed events about records that do not exist: the real handlers accept them as no-ops."""
    return [
        {"kind": "sleep_completed", "payload": {"record_id": str(uuid.uuid4()), "n": n}} for n in range(count)
    ]


class OutboxLog:
    """The outbox rows that appeared since the last look."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.seen: set[int] = set()

    async def fresh(self) -> list[outbox.Claimed]:
        rows = [row for row in await outbox_rows(self.database) if row.id not in self.seen]
        self.seen.update(row.id for row in rows)
        for row in rows:
            # A new event is ready at once, unclaimed, never tried.
            assert (row.attempts, row.claimed_until, row.dead_at, row.last_error) == (0, None, None, None)
            assert row.available_at <= utcnow()
        return [outbox.Claimed(row.id, row.kind, row.payload, row.attempts) for row in rows]


# --- Written with the change, in its transaction, and only when something consumes it. ---


async def test_every_event_producing_write_adds_exactly_one_row(
    timeline_api: Api, timeline_app: FastAPI
) -> None:
    log = OutboxLog(timeline_app.state.services.database)
    client = timeline_api.client
    alice, bob = await timeline_api.register(), await timeline_api.register()
    assert await log.fresh() == []

    await timeline_api.follow(alice, bob)
    [followed] = await log.fresh()
    assert (followed.kind, followed.payload) == ("followed", {"follower_id": alice.id, "followed_id": bob.id})
    assert_error(
        await client.post(f"/socials/follow/{bob.id}", headers=alice.headers), 422, "already_following"
    )
    assert_error(
        await client.post(f"/socials/follow/{alice.id}", headers=alice.headers), 400, "cannot_follow_self"
    )
    assert await log.fresh() == []

    start = ago(hours=9)
    opened = await client.post(
        "/sleep_records/clock_in", json={"clocked_in_at": iso(start)}, headers=bob.headers
    )
    assert opened.status_code == 201, opened.text
    assert await log.fresh() == []  # an open record is in nobody's feed
    again = await client.post("/sleep_records/clock_in", headers=bob.headers)
    assert_error(again, 400, "already_clocked_in")
    too_early = await client.post(
        "/sleep_records/clock_out",
        json={"clocked_out_at": iso(start - timedelta(minutes=1))},
        headers=bob.headers,
    )
    assert_error(too_early, 422, "validation_error")
    assert await log.fresh() == []

    closed = await client.post("/sleep_records/clock_out", headers=bob.headers)
    assert closed.status_code == 200, closed.text
    record = closed.json()["sleep_record"]
    [completed] = await log.fresh()
    assert (completed.kind, completed.payload) == ("sleep_completed", {"record_id": record["id"]})
    assert_error(await client.post("/sleep_records/clock_out", headers=bob.headers), 400, "not_clocked_in")
    assert await log.fresh() == []

    await timeline_api.unfollow(alice, bob)
    [unfollowed] = await log.fresh()
    assert (unfollowed.kind, unfollowed.payload) == (
        "unfollowed",
        {"follower_id": alice.id, "followed_id": bob.id},
    )
    assert_error(
        await client.post(f"/socials/unfollow/{bob.id}", headers=alice.headers), 422, "not_following"
    )
    assert await log.fresh() == []

    # Someone else's record, or one that does not exist: 404 and no event.
    assert_error(
        await client.delete(f"/sleep_records/{record['id']}", headers=alice.headers), 404, "not_found"
    )
    deleted = await client.delete(f"/sleep_records/{record['id']}", headers=bob.headers)
    assert deleted.status_code == 204, deleted.text
    [removal] = await log.fresh()
    assert removal.kind == "record_deleted"
    assert removal.payload["record_id"] == record["id"]
    assert removal.payload["user_id"] == bob.id
    assert removal.payload["duration"] == record["duration"]
    assert_error(await client.delete(f"/sleep_records/{record['id']}", headers=bob.headers), 404, "not_found")
    assert await log.fresh() == []


async def test_the_event_commits_and_rolls_back_with_its_change(
    timeline_api: Api, timeline_app: FastAPI
) -> None:
    database: Database = timeline_app.state.services.database
    events = Events(enabled=True)  # the outbox only: no inline apply, no wake-up
    alice, bob = await timeline_api.register(), await timeline_api.register()
    opened = await timeline_api.client.post(
        "/sleep_records/clock_in", json={"clocked_in_at": iso(ago(hours=7))}, headers=bob.headers
    )
    assert opened.status_code == 201, opened.text

    async def state() -> tuple[int, int, bool]:
        async with database.reader() as session:
            open_records = await session.scalar(
                sa.select(sa.func.count()).select_from(SleepRecord).where(SleepRecord.open_flag.is_not(None))
            )
            follow = await session.get(Follow, (uid(alice), uid(bob)))
        return await outbox_count(database), int(open_records or 0), follow is not None and follow.active

    assert await state() == (0, 1, False)
    for commit in (False, True):
        async with database.writer() as session:
            await sleep_service.clock_out(session, events, uid(bob), None)
            await socials_service.follow(session, events, uid(alice), bob.id)
            # Not visible to anyone else before the commit: neither the changes nor their events.
            assert await state() == (0, 1, False)
            if commit:
                await session.commit()
            else:
                await session.rollback()
        assert await state() == ((2, 0, True) if commit else (0, 1, False))
    kinds = sorted(row.kind for row in await outbox_rows(database))
    assert kinds == ["followed", "sleep_completed"]


async def test_without_redis_no_event_is_written(api: Api, services: Services) -> None:
    assert services.timeline is None
    assert not services.events.enabled
    alice, bob = await api.register(), await api.register()
    await api.follow(alice, bob)
    record = await api.sleep(bob, iso(ago(hours=8)), iso(ago(hours=1)))
    await api.unfollow(alice, bob)
    deleted = await api.client.delete(f"/sleep_records/{record['id']}", headers=bob.headers)
    assert deleted.status_code == 204, deleted.text
    assert await outbox_count(services.database) == 0


# --- Failures: backoff, dead-parking, status, revival. ---


async def test_failing_event_backs_off_then_is_parked_dead_and_can_be_revived(
    db: Database, database: TestDatabase
) -> None:
    settings = settings_for(database.url, outbox_max_attempts=3)
    calls: list[dict[str, Any]] = []

    async def broken(kind: str, payload: dict[str, Any]) -> None:
        calls.append(payload)
        raise RuntimeError("the cache is on fire")

    worker = Worker(db, broken, settings)
    [event_id] = await insert_events(db, nowhere(1))

    for attempt in (1, 2):
        before = utcnow()
        # Claimed once; drain() then looks again at once and finds nothing ready: it is backing off.
        assert await worker.drain() == 1
        after = utcnow()
        row = await outbox_row(db, event_id)
        assert (row.attempts, row.dead_at, row.claimed_until) == (attempt, None, None)
        assert row.last_error == "RuntimeError: the cache is on fire"
        ceiling = 0.5 * 2 ** (attempt - 1)  # 0.5 s, then 1 s, with jitter down to half of it
        assert before + timedelta(seconds=ceiling / 2 - 0.002) <= row.available_at
        assert row.available_at <= after + timedelta(seconds=ceiling)
        status = await _status(db)
        assert (status.pending, status.in_flight, status.dead) == (1, 0, 0)
        if attempt == 1:
            # The first backoff is short enough to wait out for real.
            await asyncio.sleep(max(0.0, (row.available_at - utcnow()).total_seconds()) + 0.05)
        else:
            await make_ready(db, [event_id])

    assert await worker.drain() == 1
    row = await outbox_row(db, event_id)
    assert row.attempts == 3
    assert row.dead_at is not None
    assert row.claimed_until is None
    assert row.last_error == "RuntimeError: the cache is on fire"
    assert len(calls) == 3

    # Dead is dead: no worker claims it, however long one waits.
    await make_ready(db, [event_id])
    assert await worker.drain() == 0
    assert len(calls) == 3
    status = await _status(db)
    assert (status.pending, status.in_flight, status.dead) == (0, 0, 1)
    assert status.oldest_age_seconds is None  # dead events are not a backlog

    async with db.writer() as session:
        assert await outbox.retry_dead(session) == 1
        await session.commit()
    row = await outbox_row(db, event_id)
    assert (row.attempts, row.dead_at, row.claimed_until) == (0, None, None)
    status = await _status(db)
    assert (status.pending, status.in_flight, status.dead) == (1, 0, 0)

    applied: list[dict[str, Any]] = []

    async def working(kind: str, payload: dict[str, Any]) -> None:
        applied.append(payload)

    assert await Worker(db, working, settings).drain() == 1
    assert applied == calls[:1]
    assert await outbox_count(db) == 0
    assert await _status(db) == outbox.OutboxStatus(pending=0, in_flight=0, dead=0, oldest_age_seconds=None)


async def test_status_counts_pending_in_flight_dead_and_oldest_age(db: Database) -> None:
    assert await _status(db) == outbox.OutboxStatus(pending=0, in_flight=0, dead=0, oldest_age_seconds=None)
    now = utcnow()
    event = nowhere(1)[0]
    await insert_events(
        db,
        [
            {**event, "created_at": now - timedelta(seconds=120)},  # the oldest live event
            event,
            event,
            {**event, "available_at": now + timedelta(minutes=5), "attempts": 2},  # backing off: pending
            {**event, "claimed_until": now - timedelta(seconds=5), "attempts": 1},  # lease ran out: pending
            {**event, "claimed_until": now + timedelta(minutes=1), "attempts": 1},  # in flight
            {**event, "claimed_until": now + timedelta(minutes=1), "attempts": 3},  # in flight
            # Dead, and older than anything live: counted as dead, never as the backlog's age.
            {**event, "created_at": now - timedelta(hours=2), "dead_at": now, "attempts": 10},
            {**event, "created_at": now - timedelta(hours=3), "dead_at": now, "attempts": 10},
            {**event, "dead_at": now, "attempts": 10},
        ],
    )
    status = await _status(db)
    assert (status.pending, status.in_flight, status.dead) == (5, 2, 3)
    assert status.oldest_age_seconds is not None
    assert 120 <= status.oldest_age_seconds < 150

    async with db.writer() as session:
        assert await outbox.retry_dead(session) == 3
        await session.commit()
    status = await _status(db)
    assert (status.pending, status.in_flight, status.dead) == (8, 2, 0)
    assert status.oldest_age_seconds is not None
    assert 3 * 3600 <= status.oldest_age_seconds < 3 * 3600 + 30  # revived: part of the backlog again


async def test_unknown_and_malformed_events_end_up_dead_and_never_stop_the_worker(
    db: Database, database: TestDatabase, timeline: AppTimeline
) -> None:
    settings = settings_for(database.url, outbox_max_attempts=2, outbox_poll_seconds=0.05)
    worker = Worker(db, timeline.handlers.dispatch, settings)
    bad = await insert_events(
        db,
        [
            {"kind": "mystery", "payload": {}},
            {"kind": "sleep_completed", "payload": {}},
            {"kind": "sleep_completed", "payload": {"record_id": "not-a-uuid"}},
            {"kind": "followed", "payload": {"follower_id": str(uuid.uuid4())}},
            {"kind": "record_deleted", "payload": {"duration": 60, "clocked_in_at": "yesterday"}},
        ],
    )
    good = await insert_events(db, nowhere(3))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        deadline = time.monotonic() + 15
        while True:
            rows = await outbox_rows(db)
            if all(row.dead_at is not None for row in rows):
                break
            assert not task.done(), f"the worker stopped: {task.exception()!r}"
            assert time.monotonic() < deadline, [(row.id, row.attempts, row.last_error) for row in rows]
            await asyncio.sleep(0.05)
        # Still alive and still working: new events keep being processed.
        await insert_events(db, nowhere(2))
        worker.wake()
        while await outbox_count(db) > len(bad):
            assert not task.done(), f"the worker stopped: {task.exception()!r}"
            assert time.monotonic() < deadline, await outbox_rows(db)
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        worker.wake()
        await asyncio.wait_for(task, timeout=10)
    rows = await outbox_rows(db)
    assert [row.id for row in rows] == bad
    assert not set(good) & {row.id for row in rows}
    for row in rows:
        assert row.attempts == 2
        assert row.dead_at is not None
        assert row.last_error
    assert rows[0].last_error == "UnknownEvent: unknown outbox event kind 'mystery'"


# --- Leases. ---


async def test_a_dead_workers_lease_runs_out_and_another_worker_takes_over(
    db: Database, database: TestDatabase
) -> None:
    lease = 1.0
    settings = settings_for(database.url, outbox_lease_seconds=lease)
    ids = await insert_events(db, nowhere(3))
    # The doomed worker claims the events and dies before completing them (nothing ever runs after claim).
    async with db.writer() as session:
        claimed = await outbox.claim(session, limit=10, lease=timedelta(seconds=lease))
        await session.commit()
    claimed_at = time.monotonic()
    assert [event.id for event in claimed] == ids
    assert [event.attempts for event in claimed] == [1, 1, 1]

    attempts_seen: dict[int, int] = {}

    async def apply(kind: str, payload: dict[str, Any]) -> None:
        event_id = ids[payload["n"]]
        attempts_seen[event_id] = (await outbox_row(db, event_id)).attempts

    survivor = Worker(db, apply, settings)
    assert await survivor.drain_once() == 0
    status = await _status(db)
    assert (status.pending, status.in_flight, status.dead) == (0, 3, 0)
    assert time.monotonic() - claimed_at < lease, "too slow to check that the lease holds"

    await asyncio.sleep(max(0.0, claimed_at + lease - time.monotonic()) + 0.05)
    status = await _status(db)
    assert (status.pending, status.in_flight, status.dead) == (3, 0, 0)
    assert await survivor.drain() == 3
    assert attempts_seen == dict.fromkeys(ids, 2)  # the dead worker's try counts
    assert await outbox_count(db) == 0


# --- Concurrency: several workers, one outbox. ---

WORKERS = 4
EVENTS = 300


async def test_concurrent_workers_apply_every_event_exactly_once(
    db: Database, database: TestDatabase
) -> None:
    settings = settings_for(database.url)
    await insert_events(db, nowhere(EVENTS))
    applied: Counter[int] = Counter()

    async def counting(kind: str, payload: dict[str, Any]) -> None:
        applied[payload["n"]] += 1
        await asyncio.sleep(0)  # let the other workers in between events

    workers = [Worker(db, counting, settings, batch_size=10) for _ in range(WORKERS)]
    claimed = await asyncio.gather(*(worker.drain() for worker in workers))
    assert sum(claimed) == EVENTS, f"claims per worker {claimed}: some event was claimed twice"
    assert set(applied) == set(range(EVENTS))
    assert [n for n, count in applied.items() if count != 1] == []
    assert await outbox_count(db) == 0


async def test_concurrent_workers_running_the_real_fanout_leave_timelines_equal_to_sql(
    api: Api, timeline_api: Api, timeline: AppTimeline, timeline_app: FastAPI
) -> None:
    services: Services = timeline_app.state.services
    rng = random.Random(20261128)
    people = [await timeline_api.register() for _ in range(8)]
    star = await timeline_api.register()
    for index, person in enumerate(people):
        # A ring: everyone has exactly 3 followers, the celebrity threshold, so they are fanned out.
        for step in (1, 2, 3):
            await timeline_api.follow(person, people[(index + step) % len(people)])
        await timeline_api.follow(person, star)  # 8 followers: a celebrity, merged at read time
    await _warm(timeline_api, timeline, *people)

    nights: dict[str, list[dict[str, Any]]] = {}
    for author in [*people, star]:
        nights[author.id] = []
        for night in range(6):
            start = ago(days=6.5 - night, minutes=rng.randrange(120))
            end = start + timedelta(hours=rng.uniform(1, 9))
            nights[author.id].append(await timeline_api.sleep(author, iso(start), iso(end)))
    await timeline_api.unfollow(people[0], people[1])
    await timeline_api.unfollow(people[2], star)
    await timeline_api.unfollow(people[3], people[4])
    await timeline_api.follow(people[3], people[4])
    await timeline_api.follow(people[4], people[0])  # people[0] now has 4 followers: a celebrity from here
    for author, night in ((people[5], 1), (star, 0)):
        record_id = nights[author.id][night]["id"]
        deleted = await timeline_api.client.delete(f"/sleep_records/{record_id}", headers=author.headers)
        assert deleted.status_code == 204, deleted.text
    queued = await outbox_count(services.database)
    assert queued > 80

    workers = [
        Worker(services.database, timeline.handlers.dispatch, services.settings, batch_size=5)
        for _ in range(4)
    ]
    claimed = await asyncio.gather(*(worker.drain() for worker in workers))
    assert sum(claimed) == queued, f"claims per worker {claimed}"
    assert await outbox_count(services.database) == 0

    celebrities = await timeline.store.celebrities.members()
    assert celebrities is not None
    assert celebrities == {uid(star), uid(people[0])}
    celebrity_records = await records_by_author(services.database, celebrities)

    def by_celebrity(entry: Placed) -> bool:
        return record_id_of(entry[1]) in celebrity_records

    readers = [uid(person) for person in people]
    actual = await redis_timelines(timeline.redis, readers)
    expected = await sql_timelines(services.database, readers)
    for reader in readers:
        assert duplicates(actual[reader]) == {}, reader
        fanned = {entry for entry in actual[reader] if not by_celebrity(entry)}
        due = {entry for entry in expected[reader] if not by_celebrity(entry)}
        assert fanned == due, describe_difference(reader, fanned, due)
        # A celebrity's records may sit in a timeline (a follow puts the week there), but only while due.
        merged = {entry for entry in actual[reader] if by_celebrity(entry)}
        assert merged <= expected[reader], describe_difference(reader, merged, expected[reader])
    for person in people:
        await _same_feed(api, timeline_api, timeline, person, per_page=4)


async def test_a_claim_in_progress_leaves_the_rest_of_the_outbox_to_other_workers(
    db: Database, database: TestDatabase
) -> None:
    """SKIP LOCKED must skip only the rows another worker is claiming, not every ready row: otherwise a
    second worker finds nothing while hundreds of events wait, and concurrent workers never share the load."""
    ids = await insert_events(db, nowhere(EVENTS))
    await _analyze_outbox(db, database.backend)  # the planner sees the table as a production one would
    lease = timedelta(seconds=30)
    if database.backend == "sqlite":
        # SQLite serialises writers (BEGIN IMMEDIATE): the second claim runs once the first has committed,
        # and must then take the next rows, not the leased ones.
        async with db.writer() as first:
            mine = await outbox.claim(first, limit=10, lease=lease)
            await first.commit()
        async with db.writer() as second:
            theirs = await outbox.claim(second, limit=10, lease=lease)
            await second.commit()
    else:
        async with db.writer() as first, db.writer() as second:
            mine = await outbox.claim(first, limit=10, lease=lease)  # not committed: its row locks are held
            theirs = await outbox.claim(second, limit=10, lease=lease)
            await first.commit()
            await second.commit()
    assert [event.id for event in mine] == ids[:10]
    assert [event.id for event in theirs] == ids[10:20], (
        f"a worker claiming beside another got {len(theirs)} of the {EVENTS - 10} events nobody had claimed"
    )
    status = await _status(db)
    assert (status.pending, status.in_flight, status.dead) == (EVENTS - 20, 20, 0)


# --- The operator's commands, against a throwaway database. ---


async def test_outbox_cli_status_retry_dead_and_worker(tmp_path: Path, redis_server: RedisServer) -> None:
    created = await create_database("sqlite")
    database = Database(settings_for(created.url))
    try:
        now = utcnow()
        events = nowhere(3)
        await insert_events(
            database,
            [
                {**events[0], "created_at": now - timedelta(seconds=90)},
                events[1],
                {**events[2], "attempts": 10, "dead_at": now, "last_error": "RuntimeError: boom"},
            ],
        )
        env = clean_env(GOODNIGHT_DATABASE_URL=created.url)

        # Read-only commands, run side by side (each CLI start-up costs a second or two).
        status, table, refused = await asyncio.gather(
            _cli(tmp_path, env, "outbox", "status", "--json"),
            _cli(tmp_path, env, "outbox", "status"),
            _cli(tmp_path, env, "worker"),  # no GOODNIGHT_REDIS_URL
        )
        assert status.returncode == 0, status.stderr
        counts = json.loads(status.stdout)
        assert {key: counts[key] for key in ("pending", "in_flight", "dead")} == {
            "pending": 2,
            "in_flight": 0,
            "dead": 1,
        }
        assert 90 <= counts["oldest_age_seconds"] < 150
        assert table.returncode == 0, table.stderr
        lines = [line.split() for line in table.stdout.splitlines()]
        assert ["pending", "2"] in lines
        assert ["in", "flight", "0"] in lines
        assert ["dead", "1"] in lines
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        assert "GOODNIGHT_REDIS_URL is not set" in refused.stderr
        assert await outbox_count(database) == 3  # the refused worker touched nothing

        retried = await _cli(tmp_path, env, "outbox", "retry-dead")
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.strip() == "1 dead event(s) queued again"
        revived = await _status(database)
        assert (revived.pending, revived.in_flight, revived.dead) == (3, 0, 0)
        assert all(row.attempts == 0 and row.dead_at is None for row in await outbox_rows(database))

        worker_env = {**env, "GOODNIGHT_REDIS_URL": redis_server.url, "GOODNIGHT_OUTBOX_POLL_SECONDS": "0.05"}
        with worker_process(tmp_path, worker_env, "--concurrency", "2") as worker:
            deadline = time.monotonic() + 30
            while await outbox_count(database) > 0:
                assert worker.alive(), worker.log()
                assert time.monotonic() < deadline, worker.log()
                await asyncio.sleep(0.1)
            assert worker.terminate() == 0, worker.log()
        assert "outbox worker stopped" in worker.log()
        assert await _status(database) == outbox.OutboxStatus(0, 0, 0, None)
    finally:
        await database.dispose()
        await created.drop()


# --- Helpers. ---


async def _status(database: Database) -> outbox.OutboxStatus:
    async with database.reader() as session:
        return await outbox.status(session)


async def _analyze_outbox(database: Database, backend: str) -> None:
    """Refresh the planner's statistics on the outbox, as autovacuum / InnoDB's background stats would."""
    statement = "ANALYZE TABLE outbox" if backend == "mariadb" else "ANALYZE outbox"
    async with database.engine.connect() as connection:
        await connection.execute(sa.text(statement))
        await connection.commit()


async def _cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, list(args), cwd=cwd, env=env)


async def _warm(timeline_api: Api, timeline: AppTimeline, *readers: Member) -> None:
    """First reads are answered from SQL while the timeline is built; wait for the builds."""
    for _ in range(2):  # the celebrity set is built on the first warm read
        for reader in readers:
            response = await timeline_api.feed(reader)
            assert response.status_code == 200, response.text
        await timeline.reader.drain_background()


async def _same_feed(sql: Api, cached: Api, timeline: AppTimeline, reader: Member, per_page: int) -> None:
    served = timeline.reader.served
    expected = await sql.whole_feed(reader, per_page=per_page)
    actual = await cached.whole_feed(reader, per_page=per_page)
    assert actual == expected
    assert timeline.reader.served > served, "the timeline declined: the page came from SQL"
