"""Queries on the users table."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.db import Reads
from goodnight.kit.clock import to_utc, utcnow
from goodnight.kit.driver_select import DriverSelect
from goodnight.kit.keyset import page_limit
from goodnight.models import Follow, User


async def get(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


# What a profile shows (``schemas.UserOut``): the hottest read of a user, a statement built once and run on
# the driver itself (``kit.driver_select``), so ``created_at`` comes as stored and is made aware here.
class ProfileRow(NamedTuple):
    id: uuid.UUID
    username: str
    name: str | None
    created_at: datetime
    followers_count: int
    followings_count: int


_PROFILE = DriverSelect(
    sa.select(
        User.id,
        User.username,
        User.name,
        sa.type_coerce(User.created_at, sa.DateTime()),
        User.followers_count,
        User.followings_count,
    ).where(User.id == sa.bindparam("user_id"))
)


async def profile(reads: Reads, user_id: uuid.UUID) -> ProfileRow | None:
    rows = await _PROFILE.rows(reads, {"user_id": user_id})
    if not rows:
        return None
    found_id, username, name, created_at, followers, followings = rows[0]
    return ProfileRow(found_id, username, name, to_utc(created_at), followers, followings)


async def get_by_username(session: AsyncSession, username: str) -> User | None:
    return await session.scalar(sa.select(User).where(User.username_key == username.lower()))


async def password_hash(session: AsyncSession, user_id: uuid.UUID) -> str | None:
    return await session.scalar(sa.select(User.password_hash).where(User.id == user_id))


async def replace_password_hash(session: AsyncSession, user_id: uuid.UUID, *, old: str, new: str) -> bool:
    """Swap the hash only if it is still ``old``: of two changes racing from the same password, one wins."""
    result = await session.execute(
        sa.update(User)
        .where(User.id == user_id, User.password_hash == old)
        .values(password_hash=new, updated_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


# A person as a search shows them: what ``users.schemas.Person`` holds, and the key the cursor pages by.
PersonRow = sa.Row[uuid.UUID, str, str, str | None, int, int, bool]


async def find_by_key(session: AsyncSession, viewer: uuid.UUID, key: str) -> Sequence[PersonRow]:
    """The user whose lower-cased name is ``key`` (none or one), with whether ``viewer`` follows them."""
    return (await session.execute(_people(viewer).where(User.username_key == key))).all()


async def find_by_key_range(
    session: AsyncSession, viewer: uuid.UUID, *, lowest: str, below: str, after: str | None, limit: int
) -> Sequence[PersonRow]:
    """Users with ``lowest <= username_key < below`` (and past ``after``), in key order, ``limit + 1`` rows.

    One range seek on the unique index of ``username_key``, whose byte order makes a prefix one range on
    every backend (see ``models.user.USERNAME_KEY``).
    """
    query = (
        _people(viewer)
        .where(User.username_key >= lowest, User.username_key < below)
        .order_by(User.username_key)
        .limit(page_limit(limit + 1))
    )
    if after is not None:
        query = query.where(User.username_key > after)
    return (await session.execute(query)).all()


def _people(viewer: uuid.UUID) -> sa.Select[uuid.UUID, str, str, str | None, int, int, bool]:
    """Users, each with whether the viewer follows them: an outer join that probes the viewer's follow of
    each row by primary key, so a page of people costs one query, not one more per person."""
    return sa.select(
        User.id,
        User.username,
        User.username_key,
        User.name,
        User.followers_count,
        User.followings_count,
        Follow.follower_id.is_not(None).label("followed_by_me"),
    ).outerjoin(
        Follow,
        sa.and_(Follow.follower_id == viewer, Follow.followed_id == User.id, Follow.active.is_(True)),
    )


_EXISTS = DriverSelect(sa.select(User.id).where(User.id == sa.bindparam("user_id")))


async def exists(reads: Reads, user_id: uuid.UUID) -> bool:
    return bool(await _EXISTS.rows(reads, {"user_id": user_id}))


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


# Ids per locking query: every backend caps a statement's parameters (asyncpg at 32,767).
LOCK_CHUNK = 1000


async def lock_ids_for_write(session: AsyncSession, user_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """``lock_for_write`` for any number of users, without loading them: the ids that exist, locked in id
    order (a chunk per query, the chunks in order too)."""
    ordered = sorted(set(user_ids))
    locked: set[uuid.UUID] = set()
    for at in range(0, len(ordered), LOCK_CHUNK):
        chunk = ordered[at : at + LOCK_CHUNK]
        locked.update(
            await session.scalars(
                sa.select(User.id).where(User.id.in_(chunk)).order_by(User.id).with_for_update()
            )
        )
    return locked


async def lock_if_free(session: AsyncSession, user_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Lock those of the users that nobody else holds, without waiting for the others (SKIP LOCKED): the
    way to take a lock out of id order, which waiting could turn into a deadlock."""
    wanted = sorted(set(user_ids))
    locked: set[uuid.UUID] = set()
    for at in range(0, len(wanted), LOCK_CHUNK):
        query = sa.select(User.id).where(User.id.in_(wanted[at : at + LOCK_CHUNK]))
        locked.update(await session.scalars(query.order_by(User.id).with_for_update(skip_locked=True)))
    return locked


async def delete(session: AsyncSession, user_id: uuid.UUID, *, password_hash: str) -> bool:
    """Delete the user if their password hash is still ``password_hash`` (the one a request checked)."""
    result = await session.execute(
        sa.delete(User)
        .where(User.id == user_id, User.password_hash == password_hash)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


# Marking a user active, as a Core statement built once: the ORM's version rebuilt its cache key on every
# write request.
_users = cast(sa.Table, User.__table__)  # a declarative class's table is a Table
_TOUCH = (
    sa.update(_users)
    .where(_users.c.id == sa.bindparam("user_id"))
    .values(last_active_at=sa.bindparam("now", type_=_users.c.last_active_at.type))
)


async def touch(session: AsyncSession, user_id: uuid.UUID) -> bool:
    """Mark the user active; False if there is no such user. The UPDATE also row-locks the user, as
    ``lock_for_write`` does: a write that locks only its actor needs nothing else."""
    result = await session.execute(_TOUCH, {"user_id": user_id, "now": utcnow()})
    return bool(getattr(result, "rowcount", 0))


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
