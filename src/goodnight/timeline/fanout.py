"""Applying outbox events to the Redis timelines.

Handlers never trust the event to describe the present: they re-read the database and apply what is true
now. That makes them idempotent and indifferent to order, which is what at-least-once delivery by many
concurrent workers needs. The races a re-read cannot close are closed in Redis (see ``store``): a follow
change carries its row's version and loses to a newer one, fanout never adds the records of someone the
reader has unfollowed, and a deleted record's tombstone outlives any entry a stale fanout adds for it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.feed.window import REACH, WINDOW
from goodnight.jobs.outbox import EventKind
from goodnight.kit.clock import utcnow
from goodnight.models import Follow, User
from goodnight.timeline import keys, repository
from goodnight.timeline.store import Entry, TimelineStore

logger = logging.getLogger("goodnight.fanout")
# A celebrity goes back to fanout only well below the threshold, so a user hovering around it does not
# trigger a backfill on every clock-out.
DOWNGRADE_RATIO = 0.9
# Passes of a rename's re-rendering before it gives up (to a retry by the outbox) on an author renamed again
# and again meanwhile.
RERENDER_ATTEMPTS = 5


def _deleted_entry(payload: dict[str, Any]) -> Entry | None:
    """The timeline entry of a deleted record, from its event; None for an open record (never in one)."""
    if payload.get("duration") is None:
        return None
    start = datetime.fromisoformat(payload["clocked_in_at"])
    return repository.entry(uuid.UUID(payload["record_id"]), int(payload["duration"]), start)


def _deleted_entries(payloads: list[dict[str, Any]]) -> list[tuple[uuid.UUID, Entry]]:
    """(record, entry) of each completed record among a deleted account's."""
    return [
        (uuid.UUID(record["record_id"]), entry)
        for record in payloads
        if (entry := _deleted_entry(record)) is not None
    ]


class UnknownEvent(ValueError):
    pass


class RenamedMeanwhile(RuntimeError):
    """The author kept being renamed while their renderings were rewritten: the outbox tries again."""


class Fanout:
    def __init__(self, database: Database, store: TimelineStore, settings: Settings) -> None:
        self.database = database
        self.store = store
        self.threshold = settings.celebrity_threshold
        self.active_for = timedelta(days=settings.active_days)
        self.batch_size = settings.fanout_batch_size

    async def apply(self, kind: str, payload: dict[str, Any]) -> None:
        match kind:
            case EventKind.SLEEP_COMPLETED:
                await self.sleep_completed(uuid.UUID(payload["record_id"]))
            case EventKind.RECORD_DELETED:
                await self.record_deleted(payload)
            case EventKind.FOLLOWED | EventKind.UNFOLLOWED:
                await self.follow_changed(
                    uuid.UUID(payload["follower_id"]), uuid.UUID(payload["followed_id"])
                )
            case EventKind.NAME_CHANGED:
                await self.name_changed(uuid.UUID(payload["user_id"]))
            case EventKind.ACCOUNT_DELETED:
                await self.forget_account(payload)
            case EventKind.DELETED_ACCOUNT_FOLLOWERS:
                await self.forget_author(payload)
            case _:
                raise UnknownEvent(f"unknown outbox event kind {kind!r}")

    async def apply_now(self, kind: str, payload: dict[str, Any]) -> None:
        """What must be true before the actor's response is sent. A deletion only needs its tombstones (they
        hide the records from every page); taking the entries out of every follower's timeline is left to
        the outbox."""
        if kind == EventKind.RECORD_DELETED:
            await self.forget_record(payload)
        elif kind == EventKind.ACCOUNT_DELETED:
            await self.forget_account(payload)
        else:
            await self.apply(kind, payload)

    async def sleep_completed(self, record_id: uuid.UUID) -> None:
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
        await self.store.put_renderings([repository.rendering(record)])
        if followers_count > self.threshold:
            # Celebrity: readers merge this user's records at read time. Join the set (and move its version)
            # *before* skipping fanout, so no record is ever neither fanned out nor merged.
            await self.store.celebrity_changed(author.id)
            return
        if await self.store.is_celebrity(author.id):
            if followers_count >= self.threshold * DOWNGRADE_RATIO:
                await self.store.celebrity_changed(author.id)
                return
            await self._backfill_former_celebrity(author.id, now)
            return
        await self._fan_out(author.id, [repository.row_entry(record)], active_since=now - self.active_for)

    async def _backfill_former_celebrity(self, author_id: uuid.UUID, now: datetime) -> None:
        async with self.database.reader() as session:
            rows = await repository.window_records(session, now - WINDOW, authors=[author_id])
        await self.store.put_renderings([repository.rendering(row) for row in rows])
        entries = [repository.row_entry(row) for row in rows]
        await self._fan_out(author_id, entries, active_since=now - self.active_for)
        await self.store.remove_celebrity(author_id)  # only once every follower has the records

    async def forget_record(self, payload: dict[str, Any]) -> None:
        if (entry := _deleted_entry(payload)) is not None:
            await self.store.forget_records([(uuid.UUID(payload["record_id"]), entry[0])])

    async def record_deleted(self, payload: dict[str, Any]) -> None:
        if (entry := _deleted_entry(payload)) is None:
            return  # an open record was never in any timeline
        await self.store.forget_records([(uuid.UUID(payload["record_id"]), entry[0])])
        # The tombstone already hides the record; this gives the memory back early.
        await self._fan_out(uuid.UUID(payload["user_id"]), [entry], active_since=None, remove=True)

    async def name_changed(self, user_id: uuid.UUID) -> None:
        """Render the author's records that a page can still reach again, with the name they have now.

        Tombstones are kept (a deleted record never comes back), and a rendering stored later from an older
        read never replaces these (``SET NX``). What remains is two of these handlers racing across two
        renames: the one holding the older read may write last. So each one reads the name again after
        writing, and writes again if it has moved: the last handler to finish wrote the newest name.
        """
        for _ in range(RERENDER_ATTEMPTS):
            now = utcnow()
            async with self.database.reader() as session:
                rows = await repository.window_records(session, now - REACH, authors=[user_id])
            if not rows:
                return  # nothing a page can show (or the account is gone)
            await self.store.rerender([repository.rendering(row) for row in rows], now=now.timestamp())
            async with self.database.reader() as session:
                current = await repository.author(session, user_id)
            if current is None or current == rows[0].author:
                return  # gone since, or what was just written is the name as it is now
        raise RenamedMeanwhile(f"user {user_id} was renamed again while their records were re-rendered")

    async def forget_account(self, payload: dict[str, Any]) -> None:
        """What a deleted account needs at once: tombstones for its records (every page skips them, celebrity
        merges included), its own timeline gone, and its place in the celebrity set (processes reload their
        snapshots of it)."""
        user_id = uuid.UUID(payload["user_id"])
        gone = _deleted_entries(payload["records"])
        await self.store.forget_records((record_id, day) for record_id, (day, _) in gone)
        now = utcnow()
        await self.store.forget_reader(user_id, keys.bucket_days(now - REACH, now))
        if await self.store.is_celebrity(user_id):
            await self.store.remove_celebrity(user_id)

    async def forget_author(self, payload: dict[str, Any]) -> None:
        """A deleted account's entries leave the timelines of a batch of its former followers, which are
        marked to refuse that author for good (whatever a stale fanout or follow still writes). Followers
        since deleted, or inactive (their timelines are cold, rebuilt from SQL), are skipped. Pages are exact
        without this (the tombstones hide the entries): it gives the memory back, and guards."""
        followers = [uuid.UUID(follower) for follower in payload["followers"]]
        async with self.database.reader() as session:
            readers = await repository.active_among(session, followers, since=utcnow() - self.active_for)
        entries = [entry for _, entry in _deleted_entries(payload["records"])]
        await self.store.forget_author(readers, uuid.UUID(payload["user_id"]), entries)

    async def follow_changed(self, follower_id: uuid.UUID, followed_id: uuid.UUID) -> None:
        """Merge the followee's week into the follower's timeline, or take it out: whichever the follow's
        state is now, unless a newer change of the pair has been applied already."""
        since = utcnow() - WINDOW
        async with self.database.reader() as session:
            follow = await session.get(Follow, (follower_id, followed_id))
            if follow is None:
                return  # the users are gone
            code = keys.follow_code(follow.version, follow.active)
            rows = await repository.window_records(session, since, authors=[followed_id])
        if follow.active:
            await self.store.put_renderings([repository.rendering(row) for row in rows])
        entries = [repository.row_entry(row) for row in rows]
        await self.store.set_follow_state(follower_id, followed_id, code, entries)

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
                await self.store.remove(batch, entries)
            else:
                await self.store.add(batch, author_id, entries)
            reached += len(batch)
            after = batch[-1]
