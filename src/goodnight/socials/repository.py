"""Queries on the follows table."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.kit.keyset import before
from goodnight.models import Follow, User


async def get_for_update(
    session: AsyncSession, follower_id: uuid.UUID, followed_id: uuid.UUID
) -> Follow | None:
    return await session.scalar(
        sa.select(Follow)
        .where(Follow.follower_id == follower_id, Follow.followed_id == followed_id)
        .with_for_update()
    )


async def is_following(session: AsyncSession, follower_id: uuid.UUID, followed_id: uuid.UUID) -> bool:
    found = await session.scalar(
        sa.select(Follow.active).where(
            Follow.follower_id == follower_id, Follow.followed_id == followed_id, Follow.active.is_(True)
        )
    )
    return found is not None


async def connections(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    followers: bool,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[tuple[User, datetime]]:
    """People following ``user_id`` (or followed by them), newest follow first, ``limit + 1`` rows."""
    anchor, other = (
        (Follow.followed_id, Follow.follower_id) if followers else (Follow.follower_id, Follow.followed_id)
    )
    query = (
        sa.select(User, Follow.followed_at)
        .join(Follow, User.id == other)
        .where(anchor == user_id, Follow.active.is_(True))
        .order_by(Follow.followed_at.desc(), other.desc())
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(before([Follow.followed_at, other], after))
    rows = await session.execute(query)
    return [(user, followed_at) for user, followed_at in rows]


def _followed_by(user_id: uuid.UUID) -> sa.Select[uuid.UUID]:
    return sa.select(Follow.followed_id).where(Follow.follower_id == user_id, Follow.active.is_(True))


def _followers_of(user_id: uuid.UUID) -> sa.Select[uuid.UUID]:
    return sa.select(Follow.follower_id).where(Follow.followed_id == user_id, Follow.active.is_(True))


async def counterparts(session: AsyncSession, user_id: uuid.UUID) -> set[uuid.UUID]:
    """Everyone the user follows or is followed by: whose counters the user's follows are part of."""
    return set(await session.scalars(sa.union(_followed_by(user_id), _followers_of(user_id))))


async def follower_ids(session: AsyncSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    """The user's current followers, in id order."""
    return list(await session.scalars(_followers_of(user_id).order_by(Follow.follower_id)))


async def drop_all_of(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Delete every follow row of the user, both ways, taking each active one out of the counters of the
    person on the other side (whom the caller holds locked)."""
    for counter, others in (
        (User.followers_count, _followed_by(user_id)),
        (User.followings_count, _followers_of(user_id)),
    ):
        await session.execute(
            sa.update(User)
            .where(User.id.in_(others.scalar_subquery()))
            .values({counter: counter - 1})
            .execution_options(synchronize_session=False)
        )
    for side in (Follow.follower_id, Follow.followed_id):
        await session.execute(
            sa.delete(Follow).where(side == user_id).execution_options(synchronize_session=False)
        )
