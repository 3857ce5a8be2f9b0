"""The celebrities' records, merged into pages at read time (they are never fanned out).

Each API process keeps a snapshot of the celebrities and their records in the reach of a page, reloaded
whenever the celebrity version in Redis moves, and remembers which celebrities each recent reader follows,
keyed on the reader's follow version, so a page needs no query for either.
"""

from __future__ import annotations

import asyncio
import bisect
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from goodnight.db import Database
from goodnight.feed.position import encode_position
from goodnight.feed.render import epoch_ms
from goodnight.feed.window import REACH
from goodnight.kit.clock import utcnow
from goodnight.timeline import repository
from goodnight.timeline.outage import querying
from goodnight.timeline.store import TimelineStore

# A scroll may pin a window up to a day older than now's; the snapshot covers that too.
SNAPSHOT_SPAN = REACH
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


def candidates(
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


class CelebrityMerge:
    def __init__(self, database: Database, store: TimelineStore) -> None:
        self.database = database
        self.store = store
        self.snapshot: CelebritySnapshot | None = None
        self._snapshot_lock = asyncio.Lock()
        self._follows: OrderedDict[uuid.UUID, CelebrityFollows] = OrderedDict()

    async def load(self) -> CelebritySnapshot | None:
        """The celebrities and their recent records, as of the version read first (a change after that
        moves the version again, so it is never missed). None while the celebrity set must be rebuilt."""
        async with self._snapshot_lock:
            if self.snapshot is not None:
                return self.snapshot  # loaded by another request while this one waited
            version = await self.store.celebrities.version()
            celebrities = await self.store.celebrities.members()
            if celebrities is None:
                return None
            rows = []
            if celebrities:
                async with querying(), self.database.reader() as session:
                    since = utcnow() - SNAPSHOT_SPAN
                    rows = await repository.window_records(session, since, authors=celebrities)
            await self.store.renderings.put([repository.rendering(row) for row in rows])
            members: dict[uuid.UUID, list[bytes]] = {celebrity: [] for celebrity in celebrities}
            clocked_in: dict[bytes, int] = {}
            for row in rows:
                member = encode_position(row.duration, row.id)
                members[row.user_id].append(member)
                clocked_in[member] = epoch_ms(row.clocked_in_at)
            for found in members.values():
                found.sort()
            self.snapshot = CelebritySnapshot(version, frozenset(celebrities), members, clocked_in)
            return self.snapshot

    def cached_follows(self, reader: uuid.UUID, snapshot: CelebritySnapshot) -> CelebrityFollows | None:
        """Which celebrities the reader follows, if known for the current celebrity set, with their records
        from the current snapshot (re-derived without a query when only their records changed)."""
        cached = self._follows.get(reader)
        if cached is None or cached.celebrities != snapshot.celebrities:
            return None
        if cached.snapshot != snapshot.version:
            cached = self._remember(reader, cached.follows, cached.followed, snapshot)
        self._follows.move_to_end(reader)
        return cached

    async def look_up_follows(self, reader: uuid.UUID, follows: int, snapshot: CelebritySnapshot) -> None:
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
        self._follows[reader] = entry
        if len(self._follows) > CELEBRITY_FOLLOWS_CACHE_SIZE:
            self._follows.popitem(last=False)
        return entry
