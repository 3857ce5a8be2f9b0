"""Who reads their feed. A reader's last activity, in the database, decides who fanout reaches; the
timeline's marker in Redis says it is warm, and lives a little less than the activity window, so a timeline
goes cold before fanout stops reaching its reader."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.kit.clock import utcnow
from goodnight.timeline import repository
from goodnight.timeline.buckets import Buckets
from goodnight.timeline.pages import Marker

# How often a reader's activity is written back to the database.
SEEN_REFRESH_SECONDS = 3600


def marker_ttl(settings: Settings) -> int:
    return max(settings.active_days * 86400 - SEEN_REFRESH_SECONDS, 60)


class Activity:
    def __init__(self, database: Database, buckets: Buckets, settings: Settings) -> None:
        self.database = database
        self.buckets = buckets
        self.marker_ttl = marker_ttl(settings)

    def due(self, marker: Marker) -> bool:
        """The reader's activity was last written long enough ago to write it again."""
        return time.time() - marker.seen > SEEN_REFRESH_SECONDS

    async def record(self, reader: uuid.UUID, at: datetime) -> None:
        """Mark the reader active in the database: fanout reaches them from here on."""
        async with self.database.writer() as session:
            await repository.mark_active(session, reader, at)
            await session.commit()

    async def mark_seen(self, reader: uuid.UUID) -> None:
        """A warm timeline's reader came back: record it, and keep the timeline warm for longer."""
        await self.record(reader, utcnow())
        await self.buckets.mark_seen(reader, seen=time.time(), ttl_seconds=self.marker_ttl)
