"""Queries on the sleep_records table."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.kit.keyset import before
from goodnight.models import Follow, SleepRecord
from goodnight.models.sleep_record import OPEN


async def open_record(session: AsyncSession, user_id: uuid.UUID) -> SleepRecord | None:
    return await session.scalar(
        sa.select(SleepRecord).where(SleepRecord.user_id == user_id, SleepRecord.open_flag == OPEN)
    )


async def latest(session: AsyncSession, user_id: uuid.UUID) -> SleepRecord | None:
    """The record with the latest clock-in. Records never overlap, so it is also the one that ends last."""
    return await session.scalar(
        sa.select(SleepRecord)
        .where(SleepRecord.user_id == user_id)
        .order_by(SleepRecord.clocked_in_at.desc(), SleepRecord.id.desc())
        .limit(1)
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
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(before([SleepRecord.clocked_in_at, SleepRecord.id], after))
    return list(await session.scalars(query))


async def visible_to(session: AsyncSession, record_id: uuid.UUID, viewer_id: uuid.UUID) -> SleepRecord | None:
    """The record if it is the viewer's own or belongs to someone the viewer currently follows."""
    follows_owner = sa.exists().where(
        Follow.follower_id == viewer_id, Follow.followed_id == SleepRecord.user_id, Follow.active.is_(True)
    )
    return await session.scalar(
        sa.select(SleepRecord).where(
            SleepRecord.id == record_id, sa.or_(SleepRecord.user_id == viewer_id, follows_owner)
        )
    )


async def own(session: AsyncSession, record_id: uuid.UUID, owner_id: uuid.UUID) -> SleepRecord | None:
    return await session.scalar(
        sa.select(SleepRecord).where(SleepRecord.id == record_id, SleepRecord.user_id == owner_id)
    )


async def delete(session: AsyncSession, record_id: uuid.UUID) -> None:
    await session.execute(
        sa.delete(SleepRecord).where(SleepRecord.id == record_id).execution_options(synchronize_session=False)
    )
