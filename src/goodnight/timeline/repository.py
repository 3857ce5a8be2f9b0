"""The SQL reads that feed the Redis timelines."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.models import Follow, SleepRecord, User
from goodnight.timeline import keys
from goodnight.timeline.store import Entry


def entry(record_id: uuid.UUID, duration: int, clocked_in_at: datetime) -> Entry:
    return keys.bucket_day(clocked_in_at), keys.member(duration, record_id)


def _completed_since(since: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(SleepRecord.clocked_in_at >= since, SleepRecord.duration_s.is_not(None))


async def author_entries(session: AsyncSession, author_id: uuid.UUID, since: datetime) -> list[Entry]:
    """The author's completed records inside the window (about one a night)."""
    rows = await session.execute(
        sa.select(SleepRecord.id, SleepRecord.duration_s, SleepRecord.clocked_in_at).where(
            SleepRecord.user_id == author_id, _completed_since(since)
        )
    )
    return [entry(record_id, duration, start) for record_id, duration, start in rows if duration is not None]


async def reader_entries(session: AsyncSession, reader_id: uuid.UUID, since: datetime) -> list[Entry]:
    """Everything a reader's timeline should hold, in one keyset-free SQL query (used to rebuild it)."""
    rows = await session.execute(
        sa.select(SleepRecord.id, SleepRecord.duration_s, SleepRecord.clocked_in_at)
        .join(Follow, sa.and_(Follow.followed_id == SleepRecord.user_id, Follow.follower_id == reader_id))
        .where(
            Follow.active.is_(True), SleepRecord.clocked_in_at >= since, SleepRecord.duration_s.is_not(None)
        )
    )
    return [entry(record_id, duration, start) for record_id, duration, start in rows if duration is not None]


async def followers_batch(
    session: AsyncSession,
    author_id: uuid.UUID,
    *,
    after: uuid.UUID | None,
    limit: int,
    active_since: datetime | None,
) -> list[uuid.UUID]:
    """One batch of the author's current followers in id order (only recently active ones if asked)."""
    query = (
        sa.select(Follow.follower_id)
        .where(Follow.followed_id == author_id, Follow.active.is_(True))
        .order_by(Follow.follower_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Follow.follower_id > after)
    if active_since is not None:
        query = query.join(User, User.id == Follow.follower_id).where(User.last_active_at >= active_since)
    return list(await session.scalars(query))


async def followed_among(
    session: AsyncSession, reader_id: uuid.UUID, candidates: Collection[uuid.UUID]
) -> frozenset[uuid.UUID]:
    """Which of ``candidates`` the reader currently follows (primary-key lookups)."""
    rows = await session.scalars(
        sa.select(Follow.followed_id).where(
            Follow.follower_id == reader_id, Follow.followed_id.in_(candidates), Follow.active.is_(True)
        )
    )
    return frozenset(rows)


async def celebrity_ids(session: AsyncSession, threshold: int) -> list[uuid.UUID]:
    return list(await session.scalars(sa.select(User.id).where(User.followers_count > threshold)))


async def mark_active(session: AsyncSession, user_id: uuid.UUID, at: datetime) -> None:
    await session.execute(sa.update(User).where(User.id == user_id).values(last_active_at=at))
