"""Queries on the follows table."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.db import Reads
from goodnight.kit.driver_select import DriverSelect
from goodnight.kit.keyset import before_bound, page_limit
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


# Someone on a followers or followings page (``users.schemas.UserSummary``), and when the follow was made
# (naive UTC, as stored: ``_AS_STORED``). Columns, not ORM objects, which cost more to load than the query.
class ConnectionRow(NamedTuple):
    id: uuid.UUID
    username: str
    name: str | None
    followed_at: datetime


async def connections(
    reads: Reads,
    user_id: uuid.UUID,
    *,
    followers: bool,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[ConnectionRow]:
    """People following ``user_id`` (or followed by them), newest follow first, ``limit + 1`` rows."""
    parameters: dict[str, object] = {"user_id": user_id}
    if after is not None:
        parameters["after_at"], parameters["after_id"] = after
    rows = await _connections(followers, after is not None, limit + 1).rows(reads, parameters)
    return [ConnectionRow(*row) for row in rows]


# Only the last row's time is ever read (for the next cursor): making every row's aware (``db.UTCDateTime``)
# was most of what reading the rows cost on PostgreSQL, where no other column needs converting.
_AS_STORED = sa.type_coerce(Follow.followed_at, sa.DateTime()).label("followed_at")


@functools.cache
def _connections(followers: bool, paged: bool, rows: int) -> DriverSelect:
    """Built once per variant and page size (building it cost a page about as much as running it)."""
    anchor, other = (
        (Follow.followed_id, Follow.follower_id) if followers else (Follow.follower_id, Follow.followed_id)
    )
    query = (
        sa.select(User.id, User.username, User.name, _AS_STORED)
        .join(Follow, User.id == other)
        .where(anchor == sa.bindparam("user_id"), Follow.active.is_(True))
        .order_by(Follow.followed_at.desc(), other.desc())
        .limit(page_limit(rows))
    )
    if paged:
        query = query.where(before_bound([Follow.followed_at, other], ["after_at", "after_id"]))
    return DriverSelect(query)


def _followed_by(user_id: uuid.UUID) -> sa.Select[uuid.UUID]:
    return sa.select(Follow.followed_id).where(Follow.follower_id == user_id, Follow.active.is_(True))


def _followers_of(user_id: uuid.UUID) -> sa.Select[uuid.UUID]:
    return sa.select(Follow.follower_id).where(Follow.followed_id == user_id, Follow.active.is_(True))


@dataclass(frozen=True, slots=True)
class Around:
    """The people a user's follows connect them to, in id order: whose counters those follows are part of."""

    followers: list[uuid.UUID]
    followings: list[uuid.UUID]

    @property
    def everyone(self) -> set[uuid.UUID]:
        return {*self.followers, *self.followings}


async def around(session: AsyncSession, user_id: uuid.UUID) -> Around:
    """Everyone who follows the user, and everyone the user follows (one query)."""
    rows = await session.execute(
        sa.union_all(
            _followers_of(user_id).add_columns(sa.literal(True).label("follows_them")),
            _followed_by(user_id).add_columns(sa.literal(False).label("follows_them")),
        )
    )
    followers: list[uuid.UUID] = []
    followings: list[uuid.UUID] = []
    for other, follows_them in rows:
        (followers if follows_them else followings).append(other)
    return Around(sorted(followers), sorted(followings))


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
