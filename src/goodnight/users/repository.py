"""Queries on the users table."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.kit.clock import utcnow
from goodnight.models import User


async def get(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_by_username(session: AsyncSession, username: str) -> User | None:
    return await session.scalar(sa.select(User).where(User.username_key == username.lower()))


async def exists(session: AsyncSession, user_id: uuid.UUID) -> bool:
    return await session.scalar(sa.select(User.id).where(User.id == user_id)) is not None


async def summaries(session: AsyncSession, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, User]:
    """The users of one page, in a single query (never one query per item)."""
    wanted = set(user_ids)
    if not wanted:
        return {}
    rows = await session.scalars(sa.select(User).where(User.id.in_(wanted)))
    return {user.id: user for user in rows}


async def lock_for_write(session: AsyncSession, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, User]:
    """Row-lock the given users in id order; returns the ones that exist, loaded into the session (so a
    later ``session.get`` of them costs no query).

    Every write path takes its user locks through here, always in the same (id) order, so two requests can
    never wait on each other in a cycle. The lock also serialises one user's writes, which is what makes
    "already clocked in" or "already following" checks race-free on PostgreSQL and MariaDB (SQLite writers
    are serialised by BEGIN IMMEDIATE).
    """
    ordered = sorted(set(user_ids))
    found = await session.scalars(
        sa.select(User).where(User.id.in_(ordered)).order_by(User.id).with_for_update()
    )
    return {user.id: user for user in found}


async def touch(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(sa.update(User).where(User.id == user_id).values(last_active_at=utcnow()))


async def add_to_counters(
    session: AsyncSession, follower_id: uuid.UUID, followed_id: uuid.UUID, delta: int
) -> None:
    # Arithmetic in SQL, on rows we hold locked: counters stay exact however many follows race.
    await session.execute(
        sa.update(User).where(User.id == follower_id).values(followings_count=User.followings_count + delta)
    )
    await session.execute(
        sa.update(User).where(User.id == followed_id).values(followers_count=User.followers_count + delta)
    )
