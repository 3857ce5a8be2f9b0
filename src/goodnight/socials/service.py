from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.db import Reads
from goodnight.errors import BadRequest, NotFound, Unauthorized, ValidationFailed
from goodnight.jobs.events import Followed, Unfollowed
from goodnight.jobs.publish import Events
from goodnight.kit.clock import to_utc, utcnow
from goodnight.kit.cursor import decode_cursor, encode_cursor
from goodnight.kit.ids import parse_id
from goodnight.kit.keyset import split_page
from goodnight.models import Follow, User
from goodnight.socials import repository
from goodnight.socials.repository import ConnectionRow
from goodnight.users import repository as users


class CannotFollowSelf(BadRequest):
    code = "cannot_follow_self"
    default_message = "You cannot follow yourself."


class AlreadyFollowing(ValidationFailed):
    code = "already_following"
    default_message = "You already follow this user."


class NotFollowing(ValidationFailed):
    code = "not_following"
    default_message = "You do not follow this user."


async def _lock_pair(
    session: AsyncSession, me: uuid.UUID, raw_target: str, *, self_error: Exception
) -> uuid.UUID:
    target = parse_id(raw_target)
    if target is None:
        raise NotFound("No user with that id.")
    if target == me:
        raise self_error
    found = await users.lock_for_write(session, {me, target})
    if me not in found:
        raise Unauthorized("The bearer token refers to an unknown user.")
    if target not in found:
        raise NotFound("No user with that id.")
    await users.touch(session, me)
    return target


async def follow(session: AsyncSession, events: Events, me: uuid.UUID, raw_target: str) -> User:
    target = await _lock_pair(session, me, raw_target, self_error=CannotFollowSelf())
    row = await repository.get_for_update(session, me, target)
    if row is not None and row.active:
        raise AlreadyFollowing()
    now = utcnow()
    if row is None:
        session.add(Follow(follower_id=me, followed_id=target, active=True, followed_at=now, version=1))
    else:  # re-follow: reactivate the one row this pair will ever have
        row.active = True
        row.followed_at = now
        row.version += 1
    try:
        await session.flush()
    except IntegrityError as exc:  # defence in depth; the user-row locks already serialise this pair
        raise AlreadyFollowing() from exc
    await users.add_to_counters(session, me, target, +1)
    # Applied right after commit too, so the follower's very next feed read already has the followee's week.
    await events.publish(session, Followed(me, target), apply_now=True)
    return await _user(session, target)


async def unfollow(session: AsyncSession, events: Events, me: uuid.UUID, raw_target: str) -> User:
    target = await _lock_pair(session, me, raw_target, self_error=NotFollowing())
    row = await repository.get_for_update(session, me, target)
    if row is None or not row.active:
        raise NotFollowing()
    row.active = False
    row.version += 1
    await session.flush()
    await users.add_to_counters(session, me, target, -1)
    # Applied right after commit too, so the very next feed read no longer shows the unfollowed user.
    await events.publish(session, Unfollowed(me, target), apply_now=True)
    return await _user(session, target)


async def _user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await users.get(session, user_id)  # loaded by the lock: served from the session, no query
    assert user is not None  # locked above, cannot have vanished
    return user


async def connections(
    reads: Reads, raw_user_id: str, *, followers: bool, limit: int, cursor: str | None
) -> tuple[list[ConnectionRow], str | None]:
    after = None
    if cursor is not None:
        after = decode_cursor(cursor, (datetime, uuid.UUID))
    user_id = parse_id(raw_user_id)
    if user_id is None:
        raise NotFound("No user with that id.")
    rows = await repository.connections(reads, user_id, followers=followers, limit=limit, after=after)
    # Someone on the page proves the user exists (an account's deletion takes its follows with it): only an
    # empty page costs a second query.
    if not rows and not await users.exists(reads, user_id):
        raise NotFound("No user with that id.")
    page, more = split_page(rows, limit)
    next_cursor = None
    if more:
        last = page[-1]
        next_cursor = encode_cursor(to_utc(last.followed_at), last.id)
    return page, next_cursor
