"""The followings feed computed in SQL (the embedded default, and the source of truth for caches)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.kit.keyset import before, page_limit
from goodnight.models import Follow, SleepRecord


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
    author: Author | None = None  # loaded with the row where the caller asked for it


async def feed_rows(
    session: AsyncSession,
    follower_id: uuid.UUID,
    *,
    since: datetime,
    limit: int,
    after: tuple[int, uuid.UUID] | None = None,
    offset: int = 0,
) -> list[FeedRow]:
    """Completed records of everyone ``follower_id`` actively follows, clocked in at or after ``since``,
    ordered by ``(duration desc, id desc)``; ``after`` is the keyset cursor, ``offset`` only serves the
    legacy ``start_index`` parameter.
    """
    record = SleepRecord
    query = (
        sa.select(record.id, record.user_id, record.clocked_in_at, record.clocked_out_at, record.duration_s)
        .join(Follow, sa.and_(Follow.followed_id == record.user_id, Follow.follower_id == follower_id))
        .where(Follow.active.is_(True), record.clocked_in_at >= since, record.duration_s.is_not(None))
        .order_by(record.duration_s.desc(), record.id.desc())
        .limit(page_limit(limit))
    )
    if after is not None:
        query = query.where(before([record.duration_s, record.id], after))
    if offset:
        query = query.offset(offset)
    rows = await session.execute(query)
    # duration and clock-out are never NULL here: the query only selects completed records.
    return [FeedRow(rid, uid, start, end, duration) for rid, uid, start, end, duration in rows]  # type: ignore[arg-type]
