from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.auth.passwords import Passwords
from goodnight.db import Reads
from goodnight.errors import Conflict, NotFound, Unauthorized
from goodnight.jobs.events import NameChanged
from goodnight.jobs.publish import Events
from goodnight.kit.ids import parse_id
from goodnight.models import User
from goodnight.users import repository
from goodnight.users.repository import ProfileRow
from goodnight.users.schemas import UserCreate


class UsernameTaken(Conflict):
    code = "username_taken"
    default_message = "That username is already taken."


async def register(session: AsyncSession, passwords: Passwords, data: UserCreate) -> User:
    # Hash before the first query: the slow Argon2 work must not run inside the write transaction.
    password_hash = await passwords.hash(data.password)
    if await repository.get_by_username(session, data.username) is not None:
        raise UsernameTaken()
    user = User(
        username=data.username,
        username_key=data.username.lower(),
        name=data.name,
        password_hash=password_hash,
        followers_count=0,
        followings_count=0,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent registration of the same name won the unique index
        raise UsernameTaken() from exc
    return user


async def get_user(reads: Reads, raw_id: str) -> ProfileRow:
    """Look up a user by a client-supplied id; a malformed id is simply not found."""
    user_id = parse_id(raw_id)
    user = await repository.profile(reads, user_id) if user_id is not None else None
    if user is None:
        raise NotFound("No user with that id.")
    return user


async def get_me(reads: Reads, user_id: uuid.UUID) -> ProfileRow:
    user = await repository.profile(reads, user_id)
    if user is None:  # a validly signed token for a user that no longer exists
        raise Unauthorized("The bearer token refers to an unknown user.")
    return user


async def rename(session: AsyncSession, events: Events, user_id: uuid.UUID, name: str | None) -> User:
    """Set (or, with None, clear) the user's name. Feed items carry it: the SQL feed reads it with every
    page, and the Redis timelines' stored items are rendered again, before the response is sent."""
    user = (await repository.lock_for_write(session, {user_id})).get(user_id)
    if user is None:  # a validly signed token for a user that no longer exists
        raise Unauthorized("The bearer token refers to an unknown user.")
    if user.name != name:
        user.name = name
        await session.flush()
        await events.publish(session, NameChanged(user_id), apply_now=True)
    return user
