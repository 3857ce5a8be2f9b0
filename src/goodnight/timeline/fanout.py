"""Applying outbox events to the Redis timelines.

Handlers never trust the event to describe the present: they re-read the database and apply what is true
now. That makes them idempotent and indifferent to order, which is what at-least-once delivery by many
concurrent workers needs. What a handler cannot undo in a race (a fanout landing just after an unfollow or a
delete) is harmless: every page read from Redis is checked against the database before it is served.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.jobs.outbox import EventKind
from goodnight.kit.clock import utcnow
from goodnight.models import Follow, SleepRecord, User
from goodnight.timeline import repository
from goodnight.timeline.keys import WINDOW_DAYS
from goodnight.timeline.store import Entry, TimelineStore

logger = logging.getLogger("goodnight.fanout")
WINDOW = timedelta(days=WINDOW_DAYS)
# A celebrity goes back to fanout only well below the threshold, so a user hovering around it does not
# trigger a backfill on every clock-out.
DOWNGRADE_RATIO = 0.9


class UnknownEvent(ValueError):
    pass


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
            case _:
                raise UnknownEvent(f"unknown outbox event kind {kind!r}")

    async def sleep_completed(self, record_id: uuid.UUID) -> None:
        now = utcnow()
        async with self.database.reader() as session:
            record = await session.get(SleepRecord, record_id)
            author = await session.get(User, record.user_id) if record is not None else None
            if record is None or author is None or record.duration_s is None:
                return  # deleted since, or reopened: nothing to show
            entry = repository.entry(record.id, record.duration_s, record.clocked_in_at)
            if record.clocked_in_at < now - WINDOW:
                return
            followers_count = author.followers_count
        if followers_count > self.threshold:
            # Celebrity: readers merge this user's records at read time. Join the set *before* skipping
            # fanout, so no record is ever neither fanned out nor merged.
            await self.store.add_celebrity(author.id)
            return
        if await self.store.is_celebrity(author.id):
            if followers_count >= self.threshold * DOWNGRADE_RATIO:
                return
            await self._backfill_former_celebrity(author.id, now)
            return
        await self._fan_out(author.id, [entry], active_since=now - self.active_for)

    async def _backfill_former_celebrity(self, author_id: uuid.UUID, now: datetime) -> None:
        async with self.database.reader() as session:
            entries = await repository.author_entries(session, author_id, now - WINDOW)
        await self._fan_out(author_id, entries, active_since=now - self.active_for)
        await self.store.remove_celebrity(author_id)  # only once every follower has the records

    async def record_deleted(self, payload: dict[str, Any]) -> None:
        if payload.get("duration") is None:
            return  # an open record was never in any timeline
        start = datetime.fromisoformat(payload["clocked_in_at"])
        entry = repository.entry(uuid.UUID(payload["record_id"]), int(payload["duration"]), start)
        # Reads already filter deleted records out; this just gives the memory back early.
        await self._fan_out(uuid.UUID(payload["user_id"]), [entry], active_since=None, remove=True)

    async def follow_changed(self, follower_id: uuid.UUID, followed_id: uuid.UUID) -> None:
        """Merge the followee's week into the follower's timeline, or take it out: whichever the follow's
        state is now."""
        since = utcnow() - WINDOW
        async with self.database.reader() as session:
            follow = await session.get(Follow, (follower_id, followed_id))
            following = follow is not None and follow.active
            entries = await repository.author_entries(session, followed_id, since)
        if following:
            await self.store.add([follower_id], entries)
            await self.store.bump_follows(follower_id)
        else:
            await self.store.remove([follower_id], entries)

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
                await self.store.add(batch, entries)
            reached += len(batch)
            after = batch[-1]
