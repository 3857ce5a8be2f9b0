"""Applying outbox events to the Redis timelines: the handlers the timelines register (``subscribe``).

Handlers never trust the event to describe the present: they re-read the database and apply what is true
now. That makes them idempotent and indifferent to order, which is what at-least-once delivery by many
concurrent workers needs. The races a re-read cannot close are closed in Redis (see ``store``): a follow
change carries its row's version and loses to a newer one, fanout never adds the records of someone the
reader has unfollowed, and a deleted record's tombstone outlives any entry a stale fanout adds for it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import assert_never

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.feed.window import REACH, WINDOW
from goodnight.jobs.events import (
    AccountDeleted,
    DeletedAccountFollowers,
    DeletedRecord,
    FollowChanged,
    Followed,
    NameChanged,
    RecordDeleted,
    SleepCompleted,
    Unfollowed,
)
from goodnight.jobs.handlers import Handler, Handlers
from goodnight.kit.clock import utcnow
from goodnight.models import Follow, User
from goodnight.observability import metrics
from goodnight.redis_client import REDIS_UNAVAILABLE
from goodnight.timeline import keys, repository
from goodnight.timeline.buckets import Entry
from goodnight.timeline.store import TimelineStore

logger = logging.getLogger("goodnight.fanout")
# A celebrity goes back to fanout only well below the threshold, so a user hovering around it does not
# trigger a backfill on every clock-out.
DOWNGRADE_RATIO = 0.9
# Passes of a rename's re-rendering before it gives up (to a retry by the outbox) on an author renamed again
# and again meanwhile.
RERENDER_ATTEMPTS = 5


# The events a write applies before its response is sent (read-your-writes), besides the outbox's copy.
InlineEvent = RecordDeleted | FollowChanged | NameChanged | AccountDeleted


def _deleted_entry(record: DeletedRecord) -> Entry | None:
    """The timeline entry of a deleted record; None for an open record (never in one)."""
    if record.duration is None:
        return None
    return repository.entry(record.record_id, record.duration, record.clocked_in_at)


def _deleted_entries(records: Iterable[DeletedRecord]) -> list[tuple[uuid.UUID, Entry]]:
    """(record, entry) of each completed record among a deleted account's."""
    return [(record.record_id, entry) for record in records if (entry := _deleted_entry(record)) is not None]


class RenamedMeanwhile(RuntimeError):
    """The author kept being renamed while their renderings were rewritten: the outbox tries again."""


class Fanout:
    def __init__(self, database: Database, store: TimelineStore, settings: Settings) -> None:
        self.database = database
        self.store = store
        self.threshold = settings.celebrity_threshold
        self.active_for = timedelta(days=settings.active_days)
        self.batch_size = settings.fanout_batch_size

    def subscribe(self, handlers: Handlers, *, now: Handler[InlineEvent] | None = None) -> None:
        """Every kind of event changes some timeline. ``now`` applies the inline ones in the request that
        caused them (see ``apply_now``); without it (a worker process) the outbox alone applies them."""
        handlers.on(SleepCompleted, self.sleep_completed)
        handlers.on(RecordDeleted, self.record_deleted, now=now)
        handlers.on(Followed, self.follow_changed, now=now)
        handlers.on(Unfollowed, self.follow_changed, now=now)
        handlers.on(NameChanged, self.name_changed, now=now)
        handlers.on(AccountDeleted, self.forget_account, now=now)
        handlers.on(DeletedAccountFollowers, self.forget_author)
        # Redis away: the events wait in the outbox, their attempts untouched, however long it lasts.
        handlers.on_outage(*REDIS_UNAVAILABLE)

    async def apply_now(self, event: InlineEvent) -> None:
        """What must be true before the actor's response is sent. A deletion only needs its tombstones (they
        hide the records from every page); taking the entries out of every follower's timeline is left to
        the outbox. Anything else is applied whole."""
        match event:
            case RecordDeleted():
                await self.forget_record(event)
            case AccountDeleted():
                await self.forget_account(event)
            case FollowChanged():
                await self.follow_changed(event)
            case NameChanged():
                await self.name_changed(event)
            case _:
                assert_never(event)

    async def sleep_completed(self, event: SleepCompleted) -> None:
        record_id = event.record_id
        now = utcnow()
        async with self.database.reader() as session:
            rows = await repository.window_records(session, now - WINDOW, record_id=record_id)
            if not rows:
                return  # deleted since, reopened, or already out of the window: nothing to show
            author = await session.get(User, rows[0].user_id)
            if author is None:
                return
            followers_count = author.followers_count
        record = rows[0]
        await self.store.renderings.put([repository.rendering(record)])
        if followers_count > self.threshold:
            # Celebrity: readers merge this user's records at read time. Join the set (and move its version)
            # *before* skipping fanout, so no record is ever neither fanned out nor merged.
            await self.store.celebrities.changed(author.id)
            return
        if await self.store.celebrities.contains(author.id):
            if followers_count >= self.threshold * DOWNGRADE_RATIO:
                await self.store.celebrities.changed(author.id)
                return
            await self._backfill_former_celebrity(author.id, now)
            return
        await self._fan_out(author.id, [repository.row_entry(record)], active_since=now - self.active_for)

    async def _backfill_former_celebrity(self, author_id: uuid.UUID, now: datetime) -> None:
        async with self.database.reader() as session:
            rows = await repository.window_records(session, now - WINDOW, authors=[author_id])
        await self.store.renderings.put([repository.rendering(row) for row in rows])
        entries = [repository.row_entry(row) for row in rows]
        await self._fan_out(author_id, entries, active_since=now - self.active_for)
        await self.store.celebrities.remove(author_id)  # only once every follower has the records

    async def forget_record(self, event: RecordDeleted) -> None:
        record = event.record
        if (entry := _deleted_entry(record)) is not None:
            await self.store.renderings.tombstone([(record.record_id, entry[0])])

    async def record_deleted(self, event: RecordDeleted) -> None:
        record = event.record
        if (entry := _deleted_entry(record)) is None:
            return  # an open record was never in any timeline
        await self.store.renderings.tombstone([(record.record_id, entry[0])])
        # The tombstone already hides the record; this gives the memory back early.
        await self._fan_out(record.user_id, [entry], active_since=None, remove=True)

    async def name_changed(self, event: NameChanged) -> None:
        """Render the author's records that a page can still reach again, with the name they have now.

        Tombstones are kept (a deleted record never comes back), and a rendering stored later from an older
        read never replaces these (``SET NX``). What remains is two of these handlers racing across two
        renames: the one holding the older read may write last. So each one reads the name again after
        writing, and writes again if it has moved: the last handler to finish wrote the newest name.
        """
        user_id = event.user_id
        for _ in range(RERENDER_ATTEMPTS):
            now = utcnow()
            async with self.database.reader() as session:
                rows = await repository.window_records(session, now - REACH, authors=[user_id])
            if not rows:
                return  # nothing a page can show (or the account is gone)
            await self.store.renderings.rerender(
                [repository.rendering(row) for row in rows], now=now.timestamp()
            )
            async with self.database.reader() as session:
                current = await repository.author(session, user_id)
            if current is None or current == rows[0].author:
                return  # gone since, or what was just written is the name as it is now
        raise RenamedMeanwhile(f"user {user_id} was renamed again while their records were re-rendered")

    async def forget_account(self, event: AccountDeleted) -> None:
        """What a deleted account needs at once: tombstones for its records (every page skips them, celebrity
        merges included), its own timeline gone, and its place in the celebrity set (processes reload their
        snapshots of it)."""
        user_id = event.user_id
        gone = _deleted_entries(event.records)
        await self.store.renderings.tombstone((record_id, day) for record_id, (day, _) in gone)
        now = utcnow()
        await self.store.buckets.forget_reader(user_id, keys.bucket_days(now - REACH, now))
        if await self.store.celebrities.contains(user_id):
            await self.store.celebrities.remove(user_id)

    async def forget_author(self, event: DeletedAccountFollowers) -> None:
        """A deleted account's entries leave the timelines of a batch of its former followers, which are
        marked to refuse that author for good (whatever a stale fanout or follow still writes). Followers
        since deleted, or inactive (their timelines are cold, rebuilt from SQL), are skipped. Pages are exact
        without this (the tombstones hide the entries): it gives the memory back, and guards."""
        async with self.database.reader() as session:
            readers = await repository.active_among(
                session, event.followers, since=utcnow() - self.active_for
            )
        entries = [entry for _, entry in _deleted_entries(event.records)]
        await self.store.buckets.forget_author(readers, event.user_id, entries)

    async def follow_changed(self, event: FollowChanged) -> None:
        """Merge the followee's week into the follower's timeline, or take it out: whichever the follow's
        state is now (not what the event says), unless a newer change of the pair has been applied already."""
        follower_id, followed_id = event.follower_id, event.followed_id
        since = utcnow() - WINDOW
        async with self.database.reader() as session:
            follow = await session.get(Follow, (follower_id, followed_id))
            if follow is None:
                return  # the users are gone
            code = keys.follow_code(follow.version, follow.active)
            rows = await repository.window_records(session, since, authors=[followed_id])
        if follow.active:
            await self.store.renderings.put([repository.rendering(row) for row in rows])
        entries = [repository.row_entry(row) for row in rows]
        await self.store.buckets.set_follow_state(follower_id, followed_id, code, entries)

    async def _fan_out(
        self,
        author_id: uuid.UUID,
        entries: Sequence[Entry],
        *,
        active_since: datetime | None,
        remove: bool = False,
    ) -> int:
        """Walk the author's followers a batch at a time: one SQL page and one Redis pipeline per batch."""
        if not entries:
            return 0
        after: uuid.UUID | None = None
        reached = 0
        while True:
            async with self.database.reader() as session:
                batch = await repository.followers_batch(
                    session, author_id, after=after, limit=self.batch_size, active_since=active_since
                )
            if not batch:
                return reached
            if remove:
                await self.store.buckets.remove(batch, entries)
            else:
                await self.store.buckets.add(batch, author_id, entries)
                metrics.fanned_out(len(batch) * len(entries))
            reached += len(batch)
            after = batch[-1]
