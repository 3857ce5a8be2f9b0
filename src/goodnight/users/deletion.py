"""Deleting one's account: the user, their records, their follows both ways, and every token they hold.

The password is checked first, holding a hashing slot and no database connection (as a password change
does). Then, in the request's transaction:
1. the user and everyone they follow or are followed by are locked, in id order like every other write
   (``_lock_with_counterparts``), so that those people's counters can be corrected without deadlocking
   against their own follows;
2. the follows go (the counters on the other side put right), then the records, then the user, but only if
   the password is still the one checked;
3. every token of the user is revoked, in the same transaction;
4. an ``ACCOUNT_DELETED`` event goes to the outbox, and is also applied before the response is sent: the
   records' renderings become tombstones, so every reader's next page skips them, and the user's own
   timeline is dropped. Taking the records out of every former follower's timeline is left to
   ``DELETED_ACCOUNT_FOLLOWERS`` events, which carry the followers (the follow rows are gone, so no handler
   could read them any more), a batch per event; pages are exact meanwhile, so they count as no lag.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.auth.passwords import Passwords
from goodnight.auth.revocation_feed import RevocationFeed
from goodnight.db import Database
from goodnight.errors import ServiceUnavailable, Unauthorized, retry_after
from goodnight.feed.window import REACH
from goodnight.jobs.events import AccountDeleted, DeletedAccountFollowers
from goodnight.jobs.publish import Events
from goodnight.kit.clock import utcnow
from goodnight.models import SleepRecord
from goodnight.sleep import repository as records
from goodnight.sleep.service import deleted_record
from goodnight.socials import repository as follows
from goodnight.users import repository as users
from goodnight.users.password import PasswordChangedMeanwhile, verified_hash

LOCK_ATTEMPTS = 5
# Former followers per event: one SQL query and one Redis pipeline for each, like a fanout batch.
FOLLOWERS_PER_EVENT = 1000
# A login that read the password hash before the delete committed dates its token from that read, and can
# issue it a moment after the commit. The user's id never comes back, so the cutoff may as well be late.
RACING_LOGIN_MS = 60_000


class AccountBusy(ServiceUnavailable):
    default_message = "Your followers are changing faster than the account can be deleted; try again."

    def __init__(self) -> None:
        super().__init__(headers=retry_after(1))


async def delete_account(
    database: Database,
    session: AsyncSession,
    passwords: Passwords,
    revocations: RevocationFeed,
    events: Events,
    user_id: uuid.UUID,
    *,
    password: str,
) -> None:
    """Delete the user and everything of theirs (``session`` commits it), and refuse their tokens."""
    async with passwords.slot() as hashing:
        checked = await verified_hash(database, hashing, user_id, password, wrong="The password is wrong.")
    # Under the user's lock nothing of theirs can change: no record, no follow either way.
    followers = (await _lock_with_counterparts(session, user_id)).followers
    gone = await records.completed_since_by(session, user_id, utcnow() - REACH)
    await follows.drop_all_of(session, user_id)
    await records.delete_all_of(session, user_id)
    if not await users.delete(session, user_id, password_hash=checked):
        raise PasswordChangedMeanwhile()
    revocations.revoke_issued_before(session, user_id, time.time_ns() // 1_000_000 + RACING_LOGIN_MS)
    await _publish(session, events, user_id, gone, followers)


async def _lock_with_counterparts(session: AsyncSession, user_id: uuid.UUID) -> follows.Around:
    """Lock the user and everyone they follow or are followed by, in id order; returns who those are.

    Who those are is read before the locks are taken, so a follow that commits in between brings someone
    not locked. Once the user is locked, no follow involving them can change: the list read again then is
    final, and anyone new on it is locked only if that takes no waiting, since waiting for a lower id while
    holding higher ones could close a cycle with their own writes. Otherwise the transaction starts over
    (nothing is written yet) with the newcomers in the list.
    """
    wanted = (await follows.around(session, user_id)).everyone
    for _ in range(LOCK_ATTEMPTS):
        locked = await users.lock_ids_for_write(session, {user_id, *wanted})
        if user_id not in locked:  # a validly signed token for a user that no longer exists
            raise Unauthorized("The bearer token refers to an unknown user.")
        final = await follows.around(session, user_id)
        late = final.everyone - locked
        if not late or await users.lock_if_free(session, late) == late:
            return final
        await session.rollback()
        wanted = final.everyone
    raise AccountBusy()


async def _publish(
    session: AsyncSession,
    events: Events,
    user_id: uuid.UUID,
    gone: list[SleepRecord],
    followers: list[uuid.UUID],
) -> None:
    records = tuple(deleted_record(record) for record in gone)
    await events.publish(session, AccountDeleted(user_id, records), apply_now=True)
    for at in range(0, len(followers), FOLLOWERS_PER_EVENT):
        batch = tuple(followers[at : at + FOLLOWERS_PER_EVENT])
        await events.publish(session, DeletedAccountFollowers(user_id, records, batch))
