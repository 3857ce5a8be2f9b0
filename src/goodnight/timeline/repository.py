"""The SQL reads that feed the Redis timelines."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.feed.position import encode_position
from goodnight.feed.render import stored_rendering
from goodnight.feed.repository import Author, FeedRow
from goodnight.models import Follow, SleepRecord, User
from goodnight.timeline import keys
from goodnight.timeline.buckets import AuthoredEntry, Entry
from goodnight.timeline.renderings import Rendering


def entry(record_id: uuid.UUID, duration: int, clocked_in_at: datetime) -> Entry:
    return keys.bucket_day(clocked_in_at), encode_position(duration, record_id)


def row_entry(row: FeedRow) -> Entry:
    return entry(row.id, row.duration, row.clocked_in_at)


def authored_entry(row: FeedRow) -> AuthoredEntry:
    return row.user_id, *row_entry(row)


def rendering(row: FeedRow) -> Rendering:
    return row.id, keys.bucket_day(row.clocked_in_at), stored_rendering(row)


def in_window(since: datetime) -> tuple[sa.ColumnElement[bool], ...]:
    """Completed records clocked in at or after ``since``: what a timeline may hold."""
    return SleepRecord.clocked_in_at >= since, SleepRecord.duration_s.is_not(None)


def window_records_query(
    since: datetime,
    *,
    reader: uuid.UUID | None = None,
    authors: Collection[uuid.UUID] | None = None,
    record_id: uuid.UUID | None = None,
) -> sa.Select[uuid.UUID, uuid.UUID, datetime, datetime | None, int | None, str, str | None]:
    """Records ``in_window``, each with its author's name (rows for ``feed_row``): those of the people
    ``reader`` follows (a rebuild), of ``authors`` (a followee's week, the celebrities), one record, or all
    (the seed)."""
    record = SleepRecord
    query = (
        sa.select(
            record.id,
            record.user_id,
            record.clocked_in_at,
            record.clocked_out_at,
            record.duration_s,
            User.username,
            User.name,
        )
        .join(User, User.id == record.user_id)
        .where(*in_window(since))
    )
    if reader is not None:
        query = query.join(
            Follow, sa.and_(Follow.followed_id == record.user_id, Follow.follower_id == reader)
        ).where(Follow.active.is_(True))
    if authors is not None:
        query = query.where(record.user_id.in_(authors))
    if record_id is not None:
        query = query.where(record.id == record_id)
    return query


def feed_row(row: Sequence[Any]) -> FeedRow:
    """A ``window_records_query`` row; duration and clock-out are set, the query keeps completed records."""
    record_id, user_id, start, end, duration, username, name = row
    return FeedRow(record_id, user_id, start, end, duration, Author(user_id, username, name))


async def window_records(
    session: AsyncSession,
    since: datetime,
    *,
    reader: uuid.UUID | None = None,
    authors: Collection[uuid.UUID] | None = None,
    record_id: uuid.UUID | None = None,
) -> list[FeedRow]:
    query = window_records_query(since, reader=reader, authors=authors, record_id=record_id)
    return [feed_row(row) for row in await session.execute(query)]


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


async def author(session: AsyncSession, user_id: uuid.UUID) -> Author | None:
    """The user as feed items show them, as they are now (None once deleted)."""
    row = (await session.execute(sa.select(User.username, User.name).where(User.id == user_id))).first()
    return None if row is None else Author(user_id, row.username, row.name)


async def active_among(
    session: AsyncSession, user_ids: Collection[uuid.UUID], *, since: datetime
) -> list[uuid.UUID]:
    """Which of ``user_ids`` still exist and were active since ``since`` (the readers fanout reaches)."""
    rows = await session.scalars(
        sa.select(User.id).where(User.id.in_(user_ids), User.last_active_at >= since).order_by(User.id)
    )
    return list(rows)


async def celebrity_ids(session: AsyncSession, threshold: int) -> list[uuid.UUID]:
    return list(await session.scalars(sa.select(User.id).where(User.followers_count > threshold)))


async def mark_active(session: AsyncSession, user_id: uuid.UUID, at: datetime) -> None:
    await session.execute(sa.update(User).where(User.id == user_id).values(last_active_at=at))
