"""Reading a page of a timeline from Redis: one or two round trips, no database query.

The first is one MULTI/EXEC transaction: the reader's marker and the members after the cursor of each day
bucket, read atomically (all share the reader's hash tag, hence one Cluster slot). They are merged with the
celebrity members the caller brings (never fanned out, see ``reader``). The second fetches the merged
members' stored renderings and the celebrity version, which live in other Cluster slots.

On the lean client (a single Redis node) the transaction reads the celebrity version too, and both reads
are tracked (``lean_redis``: Redis's client-side caching, whose invalidations arrive on the same connection
before any later reply): the transaction sends only the keys whose replies the process does not hold (a
PING when it holds them all), and the renderings it holds are not fetched again. A page whose reader's
timeline and items are unchanged since this process last served them is one round trip.

Why a transaction and not a Lua script: the same reads cost Redis's single thread about 40 µs less per page
as plain commands than through Lua (which converts every member into a Lua string and back). And why the
merge is not done on the server, which would spare a round trip: Lua compares strings with ``strcoll``
(Redis sets the locale), which made a merge of eight buckets cost the server more than the round trip costs
this process (``docs/benchmarks/hot-paths.md``).
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from redis.asyncio import RedisCluster

from goodnight.redis_client import RedisClient
from goodnight.timeline import keys
from goodnight.timeline.lean_redis import LeanRedis, TrackedValues


@dataclass(frozen=True, slots=True)
class Marker:
    seen: float  # when the reader was last marked active, seconds since the epoch
    follows: int  # moves on every follow and unfollow the reader makes


@dataclass(frozen=True, slots=True)
class Candidates:
    members: list[list[bytes]]  # per day bucket, newest first: (duration, id) descending
    count: int  # how many were asked of each bucket: a bucket that returned fewer has nothing more


@dataclass(frozen=True, slots=True)
class LeanRead:
    """What a timeline read on the lean client brings besides the timeline."""

    celebrity_version: bytes | None
    tracked: TrackedValues | None  # the renderings its connection holds, current as of the read


@dataclass(frozen=True, slots=True)
class TimelineRead:
    candidates: Candidates
    marker: Marker
    lean: LeanRead | None  # None when read through redis-py


@dataclass(frozen=True, slots=True)
class PageRead:
    """One read of a page's worth of a timeline, merged with the given celebrity members."""

    marker: Marker
    celebrity_version: bytes | None
    members: list[bytes]  # in feed order, without duplicates
    renderings: list[bytes | None]  # each member's stored rendering (None if missing)
    exhausted: bool  # True when nothing lies beyond the last member


def merge(candidates: Candidates, celebrity: list[bytes], count: int) -> tuple[list[bytes], bool]:
    """The first ``count`` members of the buckets and the celebrity members (both in feed order), without
    duplicates, and whether nothing lies beyond them.

    Taking ``count`` from the merge is safe although a full bucket may hold more: each of its unread members
    is below its ``count`` read ones, so below everything in the merged ``count``."""
    merged = heapq.merge(*candidates.members, celebrity, reverse=True)
    batch: list[bytes] = []
    for taken, member in enumerate(merged):
        if taken == count:
            return batch, False
        if not batch or batch[-1] != member:  # a former celebrity's record may be in both
            batch.append(member)
    return batch, all(len(found) < candidates.count for found in candidates.members)


_CELEBRITY_VERSION = (keys.CELEBRITIES_VERSION, ("GET", keys.CELEBRITIES_VERSION))


class Pages:
    def __init__(self, redis: RedisClient, lean: LeanRedis | None = None) -> None:
        self.redis = redis
        # Where there is one, the page's two reads go through the lean client, which costs a fraction of
        # redis-py's CPU per command (see ``lean_redis``); same replies, same exceptions.
        self.lean = lean

    async def read(
        self, reader: uuid.UUID, first: date, last: date, after: bytes | None, count: int
    ) -> TimelineRead | None:
        """Up to ``count`` members of each day bucket from ``last`` back to ``first`` after the cursor
        ``after``, in one round trip; None when the timeline is cold (no marker): it must not be served as
        the truth."""
        upper = b"(" + after if after is not None else b"+"
        prefix = keys.bucket_prefix(reader)
        marker = keys.marker_key(reader)
        # Each a key and its read: the lean client may answer those it holds from memory.
        reads: list[tuple[str, tuple[str | bytes | int, ...]]] = [
            (marker, ("HMGET", marker, "seen", "follows"))
        ]
        for day in keys.bucket_suffixes(first, last):
            bucket = prefix + day
            reads.append((bucket, ("ZRANGE", bucket, upper, "-", "BYLEX", "REV", "LIMIT", 0, count)))
        if self.lean is not None:
            reads.append(_CELEBRITY_VERSION)
            replies, tracked = await self.lean.read_tracked(reads)
            (seen, follows), *per_day, version = replies
            lean = LeanRead(version, tracked)
        else:
            pipe = self.redis.pipeline(transaction=True)
            for _, command in reads:
                pipe.execute_command(*command)
            (seen, follows), *per_day = await pipe.execute()
            lean = None
        if seen is None:
            return None
        return TimelineRead(Candidates(per_day, count), Marker(float(seen), int(follows or 0)), lean)

    async def page(
        self,
        reader: uuid.UUID,
        first: date,
        last: date,
        after: bytes | None,
        count: int,
        celebrity: list[bytes],
    ) -> PageRead | None:
        """The first ``count`` members after ``after`` of the day buckets from ``last`` back to ``first``
        merged with ``celebrity`` (members in feed order, below ``after``), with their renderings; None when
        the timeline is cold."""
        found = await self.read(reader, first, last, after, count)
        if found is None:
            return None
        members, exhausted = merge(found.candidates, celebrity, count)
        if found.lean is None:
            version, renderings = await self.renderings(members)
        else:
            version = found.lean.celebrity_version
            renderings = await self._tracked_renderings(members, found.lean.tracked)
        return PageRead(found.marker, version, members, renderings, exhausted)

    async def _tracked_renderings(
        self, members: list[bytes], tracked: TrackedValues | None
    ) -> list[bytes | None]:
        """The members' renderings: those the lean client's connection holds, the rest fetched (and kept)."""
        assert self.lean is not None
        return await self.lean.mget_tracked([keys.rendering_key_of(member) for member in members], tracked)

    async def renderings(self, members: Sequence[bytes]) -> tuple[bytes | None, list[bytes | None]]:
        """The celebrity version, and the rendering of each member's record (None if missing), in one round
        trip."""
        names = [keys.CELEBRITIES_VERSION, *(keys.rendering_key_of(member) for member in members)]
        if self.lean is not None:
            replies = await self.lean.mget(names)
            return replies[0], replies[1:]
        if isinstance(self.redis, RedisCluster):
            found = await self.redis.mget_nonatomic(names)
        else:
            found = await self.redis.mget(names)
        return found[0], found[1:]
