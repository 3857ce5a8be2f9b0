"""Queries on the sleep_records table."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from goodnight.kit.keyset import before, page_limit
from goodnight.models import Follow, SleepRecord, User
from goodnight.models.sleep_record import OPEN


async def open_record(session: AsyncSession, user_id: uuid.UUID) -> SleepRecord | None:
    return await session.scalar(
        sa.select(SleepRecord).where(SleepRecord.user_id == user_id, SleepRecord.open_flag == OPEN)
    )


async def latest(
    session: AsyncSession, user_id: uuid.UUID, *, starting_before: datetime | None = None
) -> SleepRecord | None:
    """The record with the latest clock-in (before ``starting_before``, if given): one index seek.

    Records never overlap, so it is also the one that ends last; of the records starting before a moment, it
    is the only one that can reach past any earlier moment.
    """
    query = sa.select(SleepRecord).where(SleepRecord.user_id == user_id)
    if starting_before is not None:
        query = query.where(SleepRecord.clocked_in_at < starting_before)
    return await session.scalar(
        query.order_by(SleepRecord.clocked_in_at.desc(), SleepRecord.id.desc()).limit(1)
    )


async def close(
    session: AsyncSession, record_id: uuid.UUID, clocked_out_at: datetime, duration_s: int
) -> bool:
    """Close a record only if it is still open: of two racing clock-outs exactly one updates a row."""
    result = await session.execute(
        sa.update(SleepRecord)
        .where(SleepRecord.id == record_id, SleepRecord.open_flag == OPEN)
        .values(clocked_out_at=clocked_out_at, duration_s=duration_s, open_flag=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def history(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, after: tuple[datetime, uuid.UUID] | None = None
) -> list[SleepRecord]:
    """A user's records, newest clock-in first, ``limit + 1`` rows."""
    query = (
        sa.select(SleepRecord)
        .where(SleepRecord.user_id == user_id)
        .order_by(SleepRecord.clocked_in_at.desc(), SleepRecord.id.desc())
        .limit(page_limit(limit + 1))
    )
    if after is not None:
        query = query.where(before([SleepRecord.clocked_in_at, SleepRecord.id], after))
    return list(await session.scalars(query))


def _visible(owner_id: QueryableAttribute[uuid.UUID], viewer_id: uuid.UUID) -> sa.ColumnElement[bool]:
    """A user's records are seen by the user and by whoever currently follows them."""
    follows_owner = sa.exists().where(
        Follow.follower_id == viewer_id, Follow.followed_id == owner_id, Follow.active.is_(True)
    )
    return sa.or_(owner_id == viewer_id, follows_owner)


async def visible_to(session: AsyncSession, record_id: uuid.UUID, viewer_id: uuid.UUID) -> SleepRecord | None:
    """The record if it is the viewer's own or belongs to someone the viewer currently follows."""
    return await session.scalar(
        sa.select(SleepRecord).where(SleepRecord.id == record_id, _visible(SleepRecord.user_id, viewer_id))
    )


async def completed_since(
    session: AsyncSession, owner_id: uuid.UUID, viewer_id: uuid.UUID, since: datetime
) -> list[SleepRecord] | None:
    """The owner's completed records clocked in at or after ``since``, in one query that also decides
    whether the viewer may see them: None when the owner does not exist or is not visible to the viewer."""
    in_window = sa.and_(
        SleepRecord.user_id == User.id,
        SleepRecord.clocked_in_at >= since,
        SleepRecord.duration_s.is_not(None),
    )
    rows = await session.execute(
        sa.select(User.id, SleepRecord)
        .outerjoin(SleepRecord, in_window)
        .where(User.id == owner_id, _visible(User.id, viewer_id))
    )
    found = rows.all()
    if not found:
        return None
    # The owner's row alone (its record columns NULL) when nothing lies in the window.
    return [record for _, record in found if record is not None]


async def own(session: AsyncSession, record_id: uuid.UUID, owner_id: uuid.UUID) -> SleepRecord | None:
    return await session.scalar(
        sa.select(SleepRecord).where(SleepRecord.id == record_id, SleepRecord.user_id == owner_id)
    )


async def delete(session: AsyncSession, record_id: uuid.UUID) -> None:
    await session.execute(
        sa.delete(SleepRecord).where(SleepRecord.id == record_id).execution_options(synchronize_session=False)
    )


async def completed_since_by(session: AsyncSession, user_id: uuid.UUID, since: datetime) -> list[SleepRecord]:
    """The user's completed records clocked in at or after ``since``."""
    return list(
        await session.scalars(
            sa.select(SleepRecord).where(
                SleepRecord.user_id == user_id,
                SleepRecord.clocked_in_at >= since,
                SleepRecord.duration_s.is_not(None),
            )
        )
    )


async def delete_all_of(session: AsyncSession, user_id: uuid.UUID) -> None:
    query = sa.delete(SleepRecord).where(SleepRecord.user_id == user_id)
    await session.execute(query.execution_options(synchronize_session=False))
