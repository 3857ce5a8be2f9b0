"""Serving a feed page from Redis alone, or saying it cannot (the caller then uses SQL): the feed's
``FastFeed``.

A page from Redis needs no database query:
1. one script call returns the reader's marker and the members after the cursor of each day bucket;
2. they are merged with the records of the celebrities the reader follows (never fanned out), from each API
   process's snapshot (``celebrity_merge``);
3. one MGET returns the candidates' stored renderings (the JSON of each feed item) and the celebrity
   version: tombstones (deleted records) and records older than the window's exact start are skipped.
The timeline itself is exact (see ``store``): unfollows and follows are applied in Redis before the actor's
response is sent, and no stale writer can put an unfollowed user's records back.
A cold timeline (never built, expired through inactivity, or lost by Redis) is answered from SQL and rebuilt
in the background (``rebuilds``); Redis failures trip a breaker and the feed is served from SQL meanwhile;
and nothing is served from Redis while the outbox is behind by more than the allowed lag (``gate``). While
the database is unreachable, warm timelines are still served, judged on the last known lag; a page that
would need a query (a celebrity snapshot to reload, a reader's celebrity follows to look up) goes to SQL,
which answers 503.
"""

from __future__ import annotations

import logging
import uuid

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.feed.pages import PageItem, PageRequest
from goodnight.feed.position import encode_position
from goodnight.feed.render import TOMBSTONE, epoch_ms, parse_rendering
from goodnight.kit.clock import utcnow
from goodnight.observability import metrics
from goodnight.redis_client import REDIS_ERRORS
from goodnight.timeline import keys
from goodnight.timeline.activity import Activity
from goodnight.timeline.background import Background
from goodnight.timeline.celebrity_merge import CelebrityMerge, candidates
from goodnight.timeline.gate import Gate
from goodnight.timeline.outage import DatabaseAway
from goodnight.timeline.rebuilds import Rebuilds
from goodnight.timeline.store import TimelineStore

logger = logging.getLogger("goodnight.timeline")
# Candidates fetched beyond what the page needs, to absorb deleted records and the window's edge.
SLACK = 4
MAX_ROUNDS = 8


class TimelineReader:
    def __init__(self, database: Database, store: TimelineStore, settings: Settings) -> None:
        self.store = store
        self.gate = Gate(database, settings.timeline_max_lag_seconds)
        self.background = Background(logger)
        self.activity = Activity(database, store.buckets, settings)
        self.rebuilds = Rebuilds(database, store, self.activity, settings)
        self.celebrities = CelebrityMerge(database, store)
        # Pages answered from Redis vs handed back to SQL: what an operator (or a test) needs to see.
        self.served = 0
        self.declined = 0

    async def page(self, request: PageRequest) -> list[PageItem] | None:
        """Up to ``limit`` items in feed order after ``after``; None when Redis cannot answer truthfully."""
        items = await self._page(request)
        if items is None:
            self.declined += 1
        else:
            self.served += 1
            metrics.feed_from_redis()
        return items

    async def drain_background(self) -> None:
        """Wait for rebuilds in flight (shutdown, tests)."""
        await self.background.drain()

    async def _page(self, request: PageRequest) -> list[PageItem] | None:
        if not await self.gate.allows():
            return None
        try:
            return await self._assemble(request)
        except DatabaseAway:
            metrics.feed_from_sql(metrics.DATABASE_AWAY)
            return None  # the page needed a query: SQL answers (503 while the database is away)
        except REDIS_ERRORS as exc:
            logger.warning("redis unavailable, serving the feed from SQL: %s", exc)
            self.gate.redis_failed()
            metrics.feed_from_sql(metrics.REDIS_ERROR)
            return None

    async def _assemble(self, request: PageRequest) -> list[PageItem] | None:
        reader, limit = request.reader, request.limit
        since_ms = epoch_ms(request.since)
        first, last = keys.bucket_day(request.since), keys.bucket_day(utcnow())
        cursor = encode_position(*request.after) if request.after is not None else None
        celebrities = self.celebrities
        page: list[PageItem] = []
        for _ in range(MAX_ROUNDS):
            wanted = limit - len(page) + SLACK
            snapshot = celebrities.snapshot or await celebrities.load()
            if snapshot is None:  # Redis lost the celebrity set, rebuilt meanwhile: SQL answers
                self._rebuild_celebrities()
                if not await self.store.buckets.is_warm(reader):
                    self._rebuild(reader)  # lost with it, most likely: both come back together
                metrics.feed_from_sql(metrics.COLD)
                return None
            # The cached celebrity follows go into the read; the read then tells whether they were current.
            followed = celebrities.cached_follows(reader, snapshot)
            # One more than the merge takes, so the merge can tell whether anything lies beyond.
            members = followed.members if followed is not None else []
            celebrity = candidates(members, snapshot, cursor, since_ms, wanted + 1)
            found = await self.store.pages.page(reader, first, last, cursor, wanted, celebrity)
            if found is None:
                self._rebuild(reader)
                metrics.feed_from_sql(metrics.COLD)
                return None
            if not page and self.activity.due(found.marker):
                self.background.spawn(
                    self.activity.mark_seen(reader), "could not record activity for %s", reader
                )
            if found.celebrity_version != snapshot.version:
                celebrities.snapshot = None  # a celebrity or one of their records changed: reload, then redo
                continue
            if snapshot.celebrities and (followed is None or followed.follows != found.marker.follows):
                await celebrities.look_up_follows(reader, found.marker.follows, snapshot)
                continue
            for member, raw in zip(found.members, found.renderings, strict=True):
                if raw is None:  # every entry is stored with its rendering: Redis has lost data
                    self._rebuild(reader)
                    metrics.feed_from_sql(metrics.COLD)
                    return None
                if raw == TOMBSTONE:
                    continue
                clocked_in_ms, item = parse_rendering(raw)
                if clocked_in_ms >= since_ms:
                    page.append(PageItem(member, item))
                    if len(page) == limit:  # the rest were fetched only in case of tombstones
                        return page
            if found.exhausted or not found.members:
                return page
            cursor = found.members[-1]
        metrics.feed_from_sql(metrics.TOMBSTONES)
        return None  # a timeline this full of deleted records is better answered by SQL

    def _rebuild(self, reader: uuid.UUID) -> None:
        self.background.spawn(self.rebuilds.rebuild(reader), "timeline rebuild failed for %s", reader)

    def _rebuild_celebrities(self) -> None:
        self.background.spawn(self.rebuilds.rebuild_celebrities(), "celebrity set rebuild failed")
