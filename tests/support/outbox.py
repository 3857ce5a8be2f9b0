"""Reading and planting outbox rows, and comparing Redis timelines with what SQL says they should hold."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from datetime import date
from typing import Any

import sqlalchemy as sa
from redis.exceptions import ConnectionError as RedisConnectionError

from goodnight.db import Database
from goodnight.feed.position import parse_position
from goodnight.feed.window import WINDOW
from goodnight.kit.clock import utcnow
from goodnight.models import Follow, OutboxEvent, SleepRecord
from goodnight.redis_client import RedisClient
from goodnight.timeline import keys, repository

# (bucket day, member): where an entry sits in a reader's timeline, not only that it is there.
Placed = tuple[date, bytes]


async def outbox_rows(database: Database) -> list[OutboxEvent]:
    async with database.reader() as session:
        return list(await session.scalars(sa.select(OutboxEvent).order_by(OutboxEvent.id)))


async def outbox_row(database: Database, event_id: int) -> OutboxEvent:
    async with database.reader() as session:
        row = await session.get(OutboxEvent, event_id)
        assert row is not None, f"outbox event {event_id} is gone"
        return row


async def outbox_count(database: Database) -> int:
    async with database.reader() as session:
        return int(await session.scalar(sa.select(sa.func.count()).select_from(OutboxEvent)) or 0)


async def insert_events(database: Database, rows: Iterable[Mapping[str, Any]]) -> list[int]:
    """Plant raw outbox rows (any kind, any state) in one statement; returns their ids in order.

    Each row needs ``kind`` and ``payload``; every other column defaults to a fresh, ready event.
    """
    now = utcnow()
    values = [
        {"created_at": now, "available_at": now, "attempts": 0, "claimed_until": None, "dead_at": None, **row}
        for row in rows
    ]
    async with database.writer() as session:
        before = await session.scalar(sa.select(sa.func.max(OutboxEvent.id))) or 0
        await session.execute(sa.insert(OutboxEvent), values)
        ids = list(
            await session.scalars(
                sa.select(OutboxEvent.id).where(OutboxEvent.id > before).order_by(OutboxEvent.id)
            )
        )
        await session.commit()
    assert len(ids) == len(values)
    return ids


async def make_ready(database: Database, ids: Collection[int]) -> None:
    """Skip an event's backoff (tests need not wait seconds for it)."""
    async with database.writer() as session:
        await session.execute(
            sa.update(OutboxEvent).where(OutboxEvent.id.in_(ids)).values(available_at=utcnow())
        )
        await session.commit()


async def redis_timelines(
    redis: RedisClient, readers: Collection[uuid.UUID]
) -> dict[uuid.UUID, list[Placed]]:
    """Every entry in each reader's day buckets inside the window, in one pipeline (duplicates kept)."""
    now = utcnow()
    days = keys.bucket_days(now - WINDOW, now)
    pipe = redis.pipeline(transaction=False)
    ordered = list(readers)
    for reader in ordered:
        for day in days:
            pipe.zrange(keys.bucket_key(reader, day), 0, -1)
    found = await pipe.execute()
    timelines: dict[uuid.UUID, list[Placed]] = {}
    for index, reader in enumerate(ordered):
        per_day = found[index * len(days) : (index + 1) * len(days)]
        timelines[reader] = [
            (day, member) for day, members in zip(days, per_day, strict=True) for member in members
        ]
    return timelines


async def sql_timelines(database: Database, readers: Collection[uuid.UUID]) -> dict[uuid.UUID, set[Placed]]:
    """What each reader's timeline should hold according to the database: every completed record of
    everyone they actively follow, clocked in inside the window (one query for all readers)."""
    since = utcnow() - WINDOW
    wanted = set(readers)
    expected: dict[uuid.UUID, set[Placed]] = {reader: set() for reader in wanted}
    async with database.reader() as session:
        rows = await session.execute(
            sa.select(Follow.follower_id, SleepRecord.id, SleepRecord.duration_s, SleepRecord.clocked_in_at)
            .join(SleepRecord, SleepRecord.user_id == Follow.followed_id)
            .where(
                Follow.active.is_(True),
                SleepRecord.duration_s.is_not(None),
                SleepRecord.clocked_in_at >= since,
            )
        )
        for follower, record_id, duration, start in rows:
            if follower in wanted and duration is not None:
                expected[follower].add(repository.entry(record_id, duration, start))
    return expected


async def records_by_author(database: Database, authors: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Ids of every record written by ``authors``."""
    if not authors:
        return set()
    async with database.reader() as session:
        return set(await session.scalars(sa.select(SleepRecord.id).where(SleepRecord.user_id.in_(authors))))


def record_id_of(member: bytes) -> uuid.UUID:
    return parse_position(member)[1]


def describe_difference(reader: uuid.UUID, actual: Iterable[Placed], expected: Iterable[Placed]) -> str:
    actual_set, expected_set = set(actual), set(expected)
    missing = sorted(str(record_id_of(member)) for _, member in expected_set - actual_set)
    extra = sorted(str(record_id_of(member)) for _, member in actual_set - expected_set)
    return f"reader {reader}: missing {missing}, unexpected {extra}"


def duplicates(entries: Iterable[Placed]) -> dict[uuid.UUID, int]:
    """Records present more than once across a reader's buckets (a sorted set cannot repeat a member, but
    the same record under two days, or two durations, would be shown twice)."""
    seen: dict[uuid.UUID, int] = defaultdict(int)
    for _, member in entries:
        seen[record_id_of(member)] += 1
    return {record_id: count for record_id, count in seen.items() if count > 1}


async def redis_away_inline(fanout: object, event: object) -> None:
    """Stands in for ``Fanout.apply_now`` while Redis is away: the write's inline apply fails, and only the
    outbox can bring its event to the timelines."""
    raise RedisConnectionError("Redis is away")
