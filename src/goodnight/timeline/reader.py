"""Serving a feed page from Redis alone, or saying it cannot (the caller then uses SQL).

A page from Redis needs no database query:
1. one script call returns the reader's marker and the members after the cursor of each day bucket;
2. they are merged with the records of the celebrities the reader follows (never fanned out), which each
   API process keeps as a snapshot, reloaded whenever the celebrity version in Redis moves;
3. one MGET returns the candidates' stored renderings (the JSON of each feed item) and that version:
   tombstones (deleted records) and records older than the window's exact start are skipped.
The timeline itself is exact (see ``store``): unfollows and follows are applied in Redis before the actor's
response is sent, and no stale writer can put an unfollowed user's records back.
A cold timeline (never built, expired through inactivity, or lost by Redis) is answered from SQL and rebuilt
in the background; Redis failures trip a breaker and the feed is served from SQL meanwhile; and nothing is
served from Redis while the outbox is behind by more than the allowed lag (``catch_up``). While the database
is unreachable, warm timelines are still served, judged on the last known lag; a page that would need a query
(a celebrity snapshot to reload, a reader's celebrity follows to look up) goes to SQL, which answers 503.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.feed.pages import PageItem, PageRequest
from goodnight.feed.position import encode_position
from goodnight.feed.render import TOMBSTONE, epoch_ms, parse_rendering
from goodnight.feed.window import REACH, WINDOW
from goodnight.kit.clock import utcnow
from goodnight.timeline import keys, repository
from goodnight.timeline.catch_up import CatchUp
from goodnight.timeline.outage import DatabaseAway, background_failures, querying
from goodnight.timeline.redis_client import REDIS_ERRORS, Breaker
from goodnight.timeline.store import TimelineStore

logger = logging.getLogger("goodnight.timeline")
# A scroll may pin a window up to a day older than now's; the celebrity snapshot covers that too.
SNAPSHOT_SPAN = REACH
# How often a reader's activity is written back to the database (it decides who gets fanout).
SEEN_REFRESH_SECONDS = 3600
# Candidates fetched beyond what the page needs, to absorb deleted records and the window's edge.
SLACK = 4
MAX_ROUNDS = 8
CELEBRITY_FOLLOWS_CACHE_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class CelebritySnapshot:
    version: bytes
    celebrities: frozenset[uuid.UUID]
    members: dict[uuid.UUID, list[bytes]]  # each celebrity's records in the span, ascending
    # Each member's clock-in (epoch ms), so the window's exact start is applied before asking for renderings.
    clocked_in: dict[bytes, int]


@dataclass(frozen=True, slots=True)
class CelebrityFollows:
    """Which celebrities one reader follows, and their records in feed order (ascending)."""

    follows: int  # the reader's follow version when this was looked up
    celebrities: frozenset[uuid.UUID]  # the celebrity set it was looked up against
    followed: frozenset[uuid.UUID]
    snapshot: bytes  # the snapshot version ``members`` come from
    members: list[bytes]


def _candidates(
    members: list[bytes], snapshot: CelebritySnapshot, cursor: bytes | None, since_ms: int, count: int
) -> list[bytes]:
    """Up to ``count`` of a reader's celebrity members (ascending) below the cursor and inside the window,
    in feed order. The window is applied here: their renderings may have expired with their day."""
    end = bisect.bisect_left(members, cursor) if cursor is not None else len(members)
    found: list[bytes] = []
    for index in range(end - 1, -1, -1):  # no slice: the list can hold every followed celebrity's week
        member = members[index]
        if snapshot.clocked_in[member] >= since_ms:
            found.append(member)
            if len(found) == count:
                break
    return found


class TimelineReader:
    def __init__(self, database: Database, store: TimelineStore, settings: Settings) -> None:
        self.database = database
        self.store = store
        self.breaker = Breaker()
        self.celebrity_threshold = settings.celebrity_threshold
        # The marker lives a little less than the activity window, so a timeline goes cold before fanout
        # stops reaching its reader.
        self.marker_ttl = max(settings.active_days * 86400 - SEEN_REFRESH_SECONDS, 60)
        self.catch_up = CatchUp(database, settings.timeline_max_lag_seconds)
        self._background: set[asyncio.Task[None]] = set()
        self._background_failures = background_failures(logger)
        self._snapshot: CelebritySnapshot | None = None
        self._snapshot_lock = asyncio.Lock()
        self._celebrity_follows: OrderedDict[uuid.UUID, CelebrityFollows] = OrderedDict()
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
        return items

    def redis_failed(self) -> None:
        self.breaker.trip()
        self.catch_up.redis_failed()

    async def _page(self, request: PageRequest) -> list[PageItem] | None:
        if not self.breaker.allows() or not await self.catch_up.allows():
            return None
        try:
            return await self._assemble(request)
        except DatabaseAway:
            return None  # the page needed a query: SQL answers (503 while the database is away)
        except REDIS_ERRORS as exc:
            logger.warning("redis unavailable, serving the feed from SQL: %s", exc)
            self.redis_failed()
            return None

    async def _assemble(self, request: PageRequest) -> list[PageItem] | None:
        reader, limit = request.reader, request.limit
        since_ms = epoch_ms(request.since)
        first, last = keys.bucket_day(request.since), keys.bucket_day(utcnow())
        cursor = encode_position(*request.after) if request.after is not None else None
        page: list[PageItem] = []
        for _ in range(MAX_ROUNDS):
            wanted = limit - len(page) + SLACK
            snapshot = self._snapshot or await self._load_snapshot()
            if snapshot is None:  # Redis lost the celebrity set, rebuilt meanwhile: SQL answers
                if not await self.store.is_warm(reader):
                    self._spawn(self._rebuild(reader))  # lost with it, most likely: both come back together
                return None
            # The cached celebrity follows go into the read; the read then tells whether they were current.
            followed = self._cached_celebrity_follows(reader, snapshot)
            # One more than the merge takes, so the merge can tell whether anything lies beyond.
            members = followed.members if followed is not None else []
            celebrity = _candidates(members, snapshot, cursor, since_ms, wanted + 1)
            found = await self.store.page(reader, first, last, cursor, wanted, celebrity)
            if found is None:
                self._spawn(self._rebuild(reader))
                return None
            if not page and time.time() - found.marker.seen > SEEN_REFRESH_SECONDS:
                self._spawn(self._mark_seen(reader))
            if found.celebrity_version != snapshot.version:
                self._snapshot = None  # a celebrity or one of their records changed: reload, then redo
                continue
            if snapshot.celebrities and (followed is None or followed.follows != found.marker.follows):
                await self._follow_celebrities(reader, found.marker.follows, snapshot)
                continue
            for member, raw in zip(found.members, found.renderings, strict=True):
                if raw is None:  # every entry is stored with its rendering: Redis has lost data
                    self._spawn(self._rebuild(reader))
                    return None
                if raw == TOMBSTONE:
                    continue
                clocked_in_ms, item = parse_rendering(raw)
                if clocked_in_ms >= since_ms:
                    page.append(PageItem(member, item))
            if len(page) >= limit or found.exhausted or not found.members:
                return page[:limit]
            cursor = found.members[-1]
        return None  # a timeline this full of deleted records is better answered by SQL

    async def _load_snapshot(self) -> CelebritySnapshot | None:
        """The celebrities and their recent records, as of the version read first (a change after that
        moves the version again, so it is never missed). None while the celebrity set is being rebuilt."""
        async with self._snapshot_lock:
            if self._snapshot is not None:
                return self._snapshot  # loaded by another request while this one waited
            version = await self.store.celebrity_version()
            celebrities = await self.store.celebrities()
            if celebrities is None:
                self._spawn(self._rebuild_celebrities())
                return None
            rows = []
            if celebrities:
                async with querying(), self.database.reader() as session:
                    since = utcnow() - SNAPSHOT_SPAN
                    rows = await repository.window_records(session, since, authors=celebrities)
            await self.store.put_renderings([repository.rendering(row) for row in rows])
            members: dict[uuid.UUID, list[bytes]] = {celebrity: [] for celebrity in celebrities}
            clocked_in: dict[bytes, int] = {}
            for row in rows:
                member = encode_position(row.duration, row.id)
                members[row.user_id].append(member)
                clocked_in[member] = epoch_ms(row.clocked_in_at)
            for found in members.values():
                found.sort()
            self._snapshot = CelebritySnapshot(version, frozenset(celebrities), members, clocked_in)
            return self._snapshot

    def _cached_celebrity_follows(
        self, reader: uuid.UUID, snapshot: CelebritySnapshot
    ) -> CelebrityFollows | None:
        """Which celebrities the reader follows, if known for the current celebrity set, with their records
        from the current snapshot (re-derived without a query when only their records changed)."""
        cached = self._celebrity_follows.get(reader)
        if cached is None or cached.celebrities != snapshot.celebrities:
            return None
        if cached.snapshot != snapshot.version:
            cached = self._remember(reader, cached.follows, cached.followed, snapshot)
        self._celebrity_follows.move_to_end(reader)
        return cached

    async def _follow_celebrities(self, reader: uuid.UUID, follows: int, snapshot: CelebritySnapshot) -> None:
        """Look up which celebrities the reader follows, keyed on the reader's follow version, read before
        the query: any follow or unfollow after it moves the version, so a stale entry is never used."""
        async with querying(), self.database.reader() as session:
            followed = await repository.followed_among(session, reader, snapshot.celebrities)
        self._remember(reader, follows, followed, snapshot)

    def _remember(
        self, reader: uuid.UUID, follows: int, followed: frozenset[uuid.UUID], snapshot: CelebritySnapshot
    ) -> CelebrityFollows:
        members = sorted(member for celebrity in followed for member in snapshot.members[celebrity])
        entry = CelebrityFollows(follows, snapshot.celebrities, followed, snapshot.version, members)
        self._celebrity_follows[reader] = entry
        if len(self._celebrity_follows) > CELEBRITY_FOLLOWS_CACHE_SIZE:
            self._celebrity_follows.popitem(last=False)
        return entry

    def _spawn(self, work: object) -> None:
        assert asyncio.iscoroutine(work)
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)  # keep a reference until done, or the task may be collected mid-flight
        task.add_done_callback(self._background.discard)

    async def _rebuild(self, reader: uuid.UUID) -> None:
        try:
            await self.rebuild(reader)
        except Exception as exc:  # background work: log, the next read tries again
            self._background_failures.report(exc, "timeline rebuild failed for %s", reader)

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
                rows = await repository.window_records(session, since, reader=reader)
            await self.store.put_renderings([repository.rendering(row) for row in rows])
            entries = [repository.authored_entry(row) for row in rows]
            return await self.store.fill(reader, entries, seen=time.time(), ttl_seconds=self.marker_ttl)
        finally:
            await self.store.unlock_rebuild(reader)

    async def _mark_seen(self, reader: uuid.UUID) -> None:
        try:
            async with self.database.writer() as session:
                await repository.mark_active(session, reader, utcnow())
                await session.commit()
            await self.store.mark_seen(reader, seen=time.time(), ttl_seconds=self.marker_ttl)
        except Exception as exc:
            self._background_failures.report(exc, "could not record activity for %s", reader)

    async def _rebuild_celebrities(self) -> None:
        try:
            await self.rebuild_celebrities()
        except Exception as exc:
            self._background_failures.report(exc, "celebrity set rebuild failed")

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
