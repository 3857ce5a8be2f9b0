"""The followings feed computed in SQL (the embedded default, and the source of truth for caches)."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.kit.keyset import before
from goodnight.models import Follow, SleepRecord, User


@dataclass(frozen=True, slots=True)
class Author:
    id: uuid.UUID
    username: str
    name: str | None


@dataclass(frozen=True, slots=True)
class FeedRow:
    id: uuid.UUID
    user_id: uuid.UUID
    clocked_in_at: datetime
    clocked_out_at: datetime
    duration: int
    author: Author | None = None  # loaded with the row when asked for (small lookups by id)


async def feed_rows(
    session: AsyncSession,
    follower_id: uuid.UUID,
    *,
    since: datetime,
    limit: int,
    after: tuple[int, uuid.UUID] | None = None,
    offset: int = 0,
    ids: Collection[uuid.UUID] | None = None,
    authors: Collection[uuid.UUID] | None = None,
    with_authors: bool = False,
) -> list[FeedRow]:
    """Completed records of everyone ``follower_id`` actively follows, clocked in at or after ``since``,
    ordered by ``(duration desc, id desc)``; ``after`` is the keyset cursor, ``offset`` only serves the
    legacy ``start_index`` parameter.

    ``ids`` keeps only those records (checking candidates from a cache against the truth); ``authors`` keeps
    only those followees (merging celebrities at read time). ``with_authors`` joins each row's author in the
    same query; it is meant for those small lookups, not for the window scan, where the join would run
    before the sort.
    """
    record = SleepRecord
    query = (
        sa.select(record.id, record.user_id, record.clocked_in_at, record.clocked_out_at, record.duration_s)
        .join(Follow, sa.and_(Follow.followed_id == record.user_id, Follow.follower_id == follower_id))
        .where(Follow.active.is_(True), record.clocked_in_at >= since, record.duration_s.is_not(None))
        .order_by(record.duration_s.desc(), record.id.desc())
        .limit(limit)
    )
    if after is not None:
        query = query.where(before([record.duration_s, record.id], after))
    if offset:
        query = query.offset(offset)
    if ids is not None:
        query = query.where(record.id.in_(ids))
    if authors is not None:
        query = query.where(record.user_id.in_(authors))
    if with_authors:
        with_users = query.join(User, User.id == record.user_id).add_columns(User.username, User.name)
        rows_with_users = await session.execute(with_users)
        return [
            FeedRow(rid, uid, start, end, duration, Author(uid, username, name))
            for rid, uid, start, end, duration, username, name in rows_with_users
        ]
    rows = await session.execute(query)
    # duration and clock-out are never NULL here: the query only selects completed records.
    return [FeedRow(rid, uid, start, end, duration) for rid, uid, start, end, duration in rows]  # type: ignore[arg-type]
