"""Redis operations on timelines. Every call here is idempotent, so outbox redelivery is harmless."""

from __future__ import annotations

import heapq
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from goodnight.timeline import keys
from goodnight.timeline.redis_client import RedisClient

Entry = tuple[date, bytes]  # (bucket day, member)
REBUILD_LOCK_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Marker:
    seen: float  # when the reader was last marked active, seconds since the epoch
    follows: int  # bumped on every follow the reader makes


@dataclass(frozen=True, slots=True)
class Candidates:
    members: list[bytes]  # newest-first in feed order: (duration, id) descending
    exhausted: bool  # True when no member past the last one exists in these buckets


def _by_day(entries: Iterable[Entry]) -> dict[date, list[bytes]]:
    grouped: dict[date, list[bytes]] = defaultdict(list)
    for day, member in entries:
        grouped[day].append(member)
    return grouped


# KEYS[1] = marker, KEYS[2] = the key that must still exist; one reader's keys share a slot (Cluster-safe).
# ARGV: seen, ttl, and the first follow version of a new marker ('' to leave the version alone).
_MARK_IF_EXISTS = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'seen', ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'follows', ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# Bumped whenever the reader follows someone: tells readers' caches of "which celebrities do I follow" that
# they are stale. Only on a warm timeline, so no marker is ever created without its lifetime.
_BUMP_FOLLOWS_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], 'follows', 1)
"""


class TimelineStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._mark_if_exists = redis.register_script(_MARK_IF_EXISTS)
        self._bump_follows_if_exists = redis.register_script(_BUMP_FOLLOWS_IF_EXISTS)

    async def add(self, readers: Sequence[uuid.UUID], entries: Iterable[Entry]) -> None:
        """Put entries into each reader's timeline: one pipeline (one round trip) for the whole batch."""
        await self._each_bucket(readers, entries, remove=False)

    async def remove(self, readers: Sequence[uuid.UUID], entries: Iterable[Entry]) -> None:
        await self._each_bucket(readers, entries, remove=True)

    async def _each_bucket(
        self, readers: Sequence[uuid.UUID], entries: Iterable[Entry], *, remove: bool
    ) -> None:
        grouped = _by_day(entries)
        if not readers or not grouped:
            return
        pipe = self.redis.pipeline(transaction=False)
        for reader in readers:
            for day, members in grouped.items():
                key = keys.bucket_key(reader, day)
                if remove:
                    pipe.zrem(key, *members)
                else:
                    pipe.zadd(key, dict.fromkeys(members, 0))
                    pipe.expireat(key, keys.expire_at(day))
        await pipe.execute()

    async def read(
        self, reader: uuid.UUID, days: Sequence[date], after: bytes | None, count: int
    ) -> tuple[Candidates | None, Marker | None]:
        """Up to ``count`` members after the cursor ``after``, merged across day buckets, in one round trip.

        Returns ``(None, None)`` when the timeline is cold (no marker): it must not be served as the truth.
        Also returns the marker: when the reader was last marked active, and their follow version.
        """
        upper = b"(" + after if after is not None else b"+"
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.marker_key(reader), ["seen", "follows"])
        for day in days:
            pipe.zrange(keys.bucket_key(reader, day), upper, b"-", desc=True, bylex=True, offset=0, num=count)
        (seen, follows), *per_day = await pipe.execute()
        if seen is None:
            return None, None
        merged = list(heapq.merge(*per_day, reverse=True))
        exhausted = all(len(found) < count for found in per_day) and len(merged) <= count
        return Candidates(merged[:count], exhausted), Marker(float(seen), int(follows or 0))

    async def clear(self, reader: uuid.UUID, days: Sequence[date]) -> None:
        """Forget a reader's timeline (marker first, so nobody reads it while it is rebuilt)."""
        await self.redis.delete(keys.marker_key(reader), *(keys.bucket_key(reader, day) for day in days))

    async def fill(
        self, reader: uuid.UUID, entries: Iterable[Entry], *, seen: float, ttl_seconds: int
    ) -> bool:
        """Load a rebuilt timeline and mark it warm for ``ttl_seconds``; False if Redis lost data meanwhile.

        The marker is only written while the rebuild lock still exists: if Redis was flushed or restarted
        since the rebuild began, the lock is gone with the entries, and a marker over a partial timeline would
        be served as the truth. Without the marker the next read simply rebuilds again.
        """
        await self.add([reader], entries)
        key, lock = keys.marker_key(reader), keys.rebuild_lock_key(reader)
        # A new marker starts its follow version at a value no earlier marker of this reader had, so a cache
        # keyed on the version can never mistake the new timeline for an old one.
        first_version = str(time.time_ns() // 1000)
        return bool(
            await self._mark_if_exists(keys=[key, lock], args=[str(seen), ttl_seconds, first_version])
        )

    async def bump_follows(self, reader: uuid.UUID) -> None:
        await self._bump_follows_if_exists(keys=[keys.marker_key(reader)])

    async def mark_seen(self, reader: uuid.UUID, *, seen: float, ttl_seconds: int) -> bool:
        """Refresh a warm timeline's activity stamp and lifetime; never resurrect a marker Redis has lost."""
        key = keys.marker_key(reader)
        return bool(await self._mark_if_exists(keys=[key, key], args=[str(seen), ttl_seconds, ""]))

    async def lock_rebuild(self, reader: uuid.UUID) -> bool:
        """One rebuild per reader at a time, across every API process."""
        return bool(
            await self.redis.set(keys.rebuild_lock_key(reader), b"1", nx=True, ex=REBUILD_LOCK_SECONDS)
        )

    async def unlock_rebuild(self, reader: uuid.UUID) -> None:
        await self.redis.delete(keys.rebuild_lock_key(reader))

    # Celebrities: a global set of users whose records are merged at read time instead of fanned out.

    async def celebrities(self) -> set[uuid.UUID] | None:
        """The celebrity set, or None when it must be rebuilt (Redis lost it)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(keys.CELEBRITIES_READY)
        pipe.smembers(keys.CELEBRITIES)
        ready, members = await pipe.execute()
        if not ready:
            return None
        return {uuid.UUID(bytes=raw) for raw in members}

    async def is_celebrity(self, user_id: uuid.UUID) -> bool:
        return bool(await self.redis.sismember(keys.CELEBRITIES, user_id.bytes))  # type: ignore[arg-type]

    async def add_celebrity(self, user_id: uuid.UUID) -> None:
        await self.redis.sadd(keys.CELEBRITIES, user_id.bytes)

    async def remove_celebrity(self, user_id: uuid.UUID) -> None:
        await self.redis.srem(keys.CELEBRITIES, user_id.bytes)

    async def forget_celebrities(self) -> None:
        """Drop the set (bulk loading only: anywhere else members must be removed by backfill)."""
        await self.redis.delete(keys.CELEBRITIES_READY, keys.CELEBRITIES)

    async def load_celebrities(self, user_ids: Iterable[uuid.UUID]) -> None:
        members = [user_id.bytes for user_id in user_ids]
        if members:
            await self.redis.sadd(keys.CELEBRITIES, *members)
        await self.redis.set(keys.CELEBRITIES_READY, b"1")
