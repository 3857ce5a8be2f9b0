"""Changing one's password, which also revokes every token issued before the change.

Two Argon2 runs (checking the current password, hashing the new one) take ~0.4 s of CPU, so no transaction
is open meanwhile: the hash is read in a short session of its own, and the write session first touches the
database after both runs (``Passwords`` may refuse with 503 ``overloaded`` before any of it). The UPDATE
then only applies if the hash is still the one that was checked, so of two changes racing from the same
password exactly one wins.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.auth.passwords import HashSlot, Passwords
from goodnight.auth.revocation_feed import RevocationFeed
from goodnight.auth.service import InvalidCredentials
from goodnight.db import Database
from goodnight.errors import Conflict, Unauthorized
from goodnight.users import repository


class PasswordChangedMeanwhile(Conflict):
    code = "password_changed"
    default_message = "The password was changed by another request meanwhile; log in again."


async def verified_hash(
    database: Database, hashing: HashSlot, user_id: uuid.UUID, password: str, *, wrong: str
) -> str:
    """The user's password hash, once ``password`` is checked against it (``InvalidCredentials`` with the
    message ``wrong`` otherwise). The hash is read in a session of its own, closed before Argon2 runs."""
    async with database.reader() as reading:
        stored = await repository.password_hash(reading, user_id)
    if stored is None:  # a validly signed token for a user that no longer exists
        raise Unauthorized("The bearer token refers to an unknown user.")
    if not await hashing.verify(stored, password):
        raise InvalidCredentials(wrong)
    return stored


async def change_password(
    database: Database,
    session: AsyncSession,
    passwords: Passwords,
    revocations: RevocationFeed,
    user_id: uuid.UUID,
    *,
    current: str,
    new: str,
) -> None:
    """Replace the password (``session`` commits it) and revoke every token issued before now."""
    # One hashing slot for both runs, taken first: a change refused for want of one has cost no query.
    async with passwords.slot() as hashing:
        old_hash = await verified_hash(
            database, hashing, user_id, current, wrong="The current password is wrong."
        )
        new_hash = await hashing.hash(new)
    # Taken before the write: every token issued until now, this very millisecond included, is revoked with
    # the change; a login with the new password can only begin once the change has committed, later.
    revoked_before_ms = time.time_ns() // 1_000_000 + 1
    if not await repository.replace_password_hash(session, user_id, old=old_hash, new=new_hash):
        if not await repository.exists(session, user_id):
            raise Unauthorized("The bearer token refers to an unknown user.")
        raise PasswordChangedMeanwhile()
    revocations.revoke_issued_before(session, user_id, revoked_before_ms)
