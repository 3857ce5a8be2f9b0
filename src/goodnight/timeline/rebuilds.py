"""Rebuilding from the database what Redis does not have: a reader's timeline (never built, gone cold, or
lost), and the celebrity set."""

from __future__ import annotations

import time
import uuid

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.feed.window import WINDOW
from goodnight.kit.clock import utcnow
from goodnight.timeline import keys, repository
from goodnight.timeline.activity import Activity
from goodnight.timeline.store import TimelineStore


class Rebuilds:
    def __init__(
        self, database: Database, store: TimelineStore, activity: Activity, settings: Settings
    ) -> None:
        self.database = database
        self.store = store
        self.activity = activity
        self.celebrity_threshold = settings.celebrity_threshold

    async def rebuild(self, reader: uuid.UUID) -> bool:
        """Rebuild a reader's timeline from one SQL query. False if another process is on it, or if Redis lost
        data before it finished (the next read tries again).

        The order matters: the old keys go first, then the reader is marked active (so fanout includes them
        from here on), then the database is read. Anything committed before the reader was marked active is
        in that read (fanout may have skipped the reader for it, or added it before the keys were dropped);
        anything committed later reaches the timeline through fanout, which keeps it since loading only adds.

        The read may be served by a replica, fenced: ``fenced_session`` takes the primary's position once
        the mark has committed, and uses a replica only once it has replayed past that position (else the
        primary). That is enough: every transaction committed before the mark lies before that position, so
        the replica's read sees all of them, which is all the guarantee above asks of the read. Whatever it
        may still show that has changed since (an unfollow, a deleted record, a rename) is handled in Redis,
        as for a read on the primary that loses a race with those writes: the follow state refuses an
        unfollowed author's entries, and tombstones and newer renderings are never replaced.
        """
        buckets = self.store.buckets
        if not await buckets.lock_rebuild(reader):
            return False
        try:
            now = utcnow()
            since = now - WINDOW
            await buckets.clear(reader, keys.bucket_days(since, now))
            await self.activity.record(reader, now)
            async with self.database.fenced_session() as session:
                rows = await repository.window_records(session, since, reader=reader)
            await self.store.renderings.put([repository.rendering(row) for row in rows])
            entries = [repository.authored_entry(row) for row in rows]
            return await buckets.fill(reader, entries, seen=time.time(), ttl_seconds=self.activity.marker_ttl)
        finally:
            await buckets.unlock_rebuild(reader)

    async def rebuild_celebrities(self) -> None:
        """Add everyone above the threshold and mark the set ready. Never remove anyone: a member's recent
        records were not fanned out, and only the fanout's backfill may take a member out of the set.
        Fenced like a timeline's read: it sees everything committed before it began, as the primary would."""
        async with self.database.fenced_session() as session:
            ids = await repository.celebrity_ids(session, self.celebrity_threshold)
        await self.store.celebrities.load(ids)
