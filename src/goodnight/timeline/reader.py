"""Serving a feed page from the Redis timeline, or saying it cannot (the caller then uses SQL).

A page from Redis is assembled from candidates, never trusted blindly:
1. up to N+1 members after the cursor, merged across the reader's day buckets (one round trip);
2. checked against the database in one query by id (still followed, not deleted, inside the window), which
   also makes every race between fanout and unfollow/delete harmless;
3. merged with the records of followed celebrities, which are never fanned out.
A cold timeline (never built, expired through inactivity, or lost by Redis) is answered from SQL and rebuilt
in the background; Redis failures trip a breaker and the feed is served from SQL meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.feed.repository import FeedRow, feed_rows
from goodnight.jobs import outbox
from goodnight.kit.clock import utcnow
from goodnight.timeline import keys, repository
from goodnight.timeline.redis_client import REDIS_ERRORS, Breaker
from goodnight.timeline.store import Marker, TimelineStore

logger = logging.getLogger("goodnight.timeline")
WINDOW = timedelta(days=keys.WINDOW_DAYS)
# How often a reader's activity is written back to the database (it decides who gets fanout).
SEEN_REFRESH_SECONDS = 3600
# Candidates fetched beyond what the page needs, to absorb the few that fail the database check.
SLACK = 4
MAX_ROUNDS = 8
CATCH_UP_RECHECK_SECONDS = 0.5
CELEBRITY_FOLLOWS_CACHE_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class PageRequest:
    reader: uuid.UUID
    since: datetime  # the window's start, pinned by the cursor for a whole scroll
    limit: int
    after: tuple[int, uuid.UUID] | None  # (duration, id) of the last row already seen


def _order_key(row: FeedRow) -> tuple[int, uuid.UUID]:
    return row.duration, row.id


class TimelineReader:
    def __init__(self, database: Database, store: TimelineStore, settings: Settings) -> None:
        self.database = database
        self.store = store
        self.breaker = Breaker()
        self.celebrity_threshold = settings.celebrity_threshold
        # The marker lives a little less than the activity window, so a timeline goes cold before fanout
        # stops reaching its reader.
        self.marker_ttl = max(settings.active_days * 86400 - SEEN_REFRESH_SECONDS, 60)
        self.max_lag = settings.timeline_max_lag_seconds
        # After a Redis failure seen here, nothing is served from Redis until the outbox is confirmed caught
        # up: writes made meanwhile wait there, and a timeline that survived the outage does not have them.
        self._suspect = False
        self._caught_up = False
        self._recheck_at = 0.0
        self._background: set[asyncio.Task[None]] = set()
        # reader -> (follow version, celebrity set, the celebrities among the reader's followings)
        self._celebrity_follows: OrderedDict[
            uuid.UUID, tuple[int, frozenset[uuid.UUID], frozenset[uuid.UUID]]
        ] = OrderedDict()
        # Pages answered from Redis vs handed back to SQL: what an operator (or a test) needs to see.
        self.served = 0
        self.declined = 0

    async def page(self, session: AsyncSession, request: PageRequest) -> list[FeedRow] | None:
        """Up to ``limit`` rows in feed order after ``after``, or None when Redis cannot answer truthfully."""
        rows = await self._page(session, request)
        if rows is None:
            self.declined += 1
        else:
            self.served += 1
        return rows

    def redis_failed(self) -> None:
        self.breaker.trip()
        self._suspect = True

    async def _outbox_caught_up(self, session: AsyncSession) -> bool:
        """True when no outbox event has waited longer than the allowed lag (checked twice a second at most,
        and right away after a failure)."""
        now = time.monotonic()
        if self._suspect or now >= self._recheck_at:
            age = await outbox.oldest_pending_age(session)
            self._caught_up = age is None or age <= self.max_lag
            self._recheck_at = now + CATCH_UP_RECHECK_SECONDS
            self._suspect = self._suspect and not self._caught_up
        return self._caught_up

    async def _page(self, session: AsyncSession, request: PageRequest) -> list[FeedRow] | None:
        if not self.breaker.allows() or not await self._outbox_caught_up(session):
            return None
        try:
            found = await self._from_timeline(session, request)
            if found is None:
                return None
            fanned, marker = found
            celebrities = await self.store.celebrities()
        except REDIS_ERRORS as exc:
            logger.warning("redis unavailable, serving the feed from SQL: %s", exc)
            self.redis_failed()
            return None
        if celebrities is None:
            self._spawn(self._rebuild_celebrities())
            return None
        followed = await self._followed_celebrities(session, request.reader, marker, frozenset(celebrities))
        if not followed:
            return fanned
        merged = await feed_rows(
            session,
            request.reader,
            since=request.since,
            limit=request.limit,
            after=request.after,
            authors=followed,
            with_authors=True,
        )
        unique = {row.id: row for row in [*fanned, *merged]}
        return sorted(unique.values(), key=_order_key, reverse=True)[: request.limit]

    async def _followed_celebrities(
        self, session: AsyncSession, reader: uuid.UUID, marker: Marker, celebrities: frozenset[uuid.UUID]
    ) -> frozenset[uuid.UUID]:
        """The celebrities this reader follows, cached until the reader follows someone (the marker's follow
        version moves) or the celebrity set changes. An unfollow may leave a stale member in the cache:
        harmless, the merge query only returns records of people still followed."""
        if not celebrities:
            return frozenset()
        cached = self._celebrity_follows.get(reader)
        if cached is not None and cached[0] == marker.follows and cached[1] == celebrities:
            self._celebrity_follows.move_to_end(reader)
            return cached[2]
        followed = await repository.followed_among(session, reader, celebrities)
        self._celebrity_follows[reader] = (marker.follows, celebrities, followed)
        if len(self._celebrity_follows) > CELEBRITY_FOLLOWS_CACHE_SIZE:
            self._celebrity_follows.popitem(last=False)
        return followed

    async def _from_timeline(
        self, session: AsyncSession, request: PageRequest
    ) -> tuple[list[FeedRow], Marker] | None:
        reader, since, limit = request.reader, request.since, request.limit
        days = keys.bucket_days(since, utcnow())
        cursor = keys.member(*request.after) if request.after is not None else None
        valid: list[FeedRow] = []
        for _ in range(MAX_ROUNDS):
            wanted = limit - len(valid)
            candidates, marker = await self.store.read(reader, days, cursor, wanted + SLACK)
            if candidates is None or marker is None:
                self._spawn(self._rebuild(reader))
                return None
            if not valid and time.time() - marker.seen > SEEN_REFRESH_SECONDS:
                self._spawn(self._mark_seen(reader))
            if candidates.members:
                ids = [keys.parse_member(member)[1] for member in candidates.members]
                checked = {
                    row.id: row
                    for row in await feed_rows(
                        session, reader, since=since, limit=len(ids), ids=ids, with_authors=True
                    )
                }
                valid.extend(checked[record_id] for record_id in ids if record_id in checked)
                cursor = candidates.members[-1]
            if len(valid) >= limit or candidates.exhausted:
                return valid[:limit], marker
        return None  # a timeline this full of stale entries is better answered by SQL (and rebuilt)

    def _spawn(self, work: object) -> None:
        assert asyncio.iscoroutine(work)
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)  # keep a reference until done, or the task may be collected mid-flight
        task.add_done_callback(self._background.discard)

    async def _rebuild(self, reader: uuid.UUID) -> None:
        try:
            await self.rebuild(reader)
        except Exception:  # background work: log, the next read tries again
            logger.exception("timeline rebuild failed for %s", reader)

    async def rebuild(self, reader: uuid.UUID) -> bool:
        """Rebuild a reader's timeline from one SQL query. False if another process is on it, or if Redis lost
        data before it finished (the next read tries again).

        The order matters: the old keys go first, then the reader is marked active (so fanout includes them
        from here on), then the database is read. Anything committed before that read is in it; anything
        fanned out after the keys were dropped is kept, since loading only adds.
        """
        if not await self.store.lock_rebuild(reader):
            return False
        try:
            now = utcnow()
            since = now - WINDOW
            await self.store.clear(reader, keys.bucket_days(since, now))
            async with self.database.writer() as session:
                await repository.mark_active(session, reader, now)
                await session.commit()
            async with self.database.reader() as session:
                entries = await repository.reader_entries(session, reader, since)
            return await self.store.fill(reader, entries, seen=time.time(), ttl_seconds=self.marker_ttl)
        finally:
            await self.store.unlock_rebuild(reader)

    async def _mark_seen(self, reader: uuid.UUID) -> None:
        try:
            async with self.database.writer() as session:
                await repository.mark_active(session, reader, utcnow())
                await session.commit()
            await self.store.mark_seen(reader, seen=time.time(), ttl_seconds=self.marker_ttl)
        except Exception:
            logger.exception("could not record activity for %s", reader)

    async def _rebuild_celebrities(self) -> None:
        try:
            await self.rebuild_celebrities()
        except Exception:
            logger.exception("celebrity set rebuild failed")

    async def rebuild_celebrities(self) -> None:
        """Add everyone above the threshold and mark the set ready. Never remove anyone: a member's recent
        records were not fanned out, and only the fanout's backfill may take a member out of the set."""
        async with self.database.reader() as session:
            ids = await repository.celebrity_ids(session, self.celebrity_threshold)
        await self.store.load_celebrities(ids)

    async def drain_background(self) -> None:
        """Wait for rebuilds in flight (shutdown, tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
