"""Writing a reader's timeline: its day buckets, its follow state, its marker and its rebuild lock.

A reader's buckets only ever receive a followee's records through ``scripts.ADD_ENTRIES`` or
``scripts.SET_FOLLOW_STATE``, which consult the reader's follow-state hash in the same atomic step: once an
unfollow is recorded there, no writer holding an older read of the follow graph can put that followee's
records back. Every call here is idempotent, so outbox redelivery is harmless.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from goodnight.redis_client import RedisClient
from goodnight.timeline import keys
from goodnight.timeline.scripts import Call, Scripts

Entry = tuple[date, bytes]  # (bucket day, member)
AuthoredEntry = tuple[uuid.UUID, date, bytes]  # (author, bucket day, member)

REBUILD_LOCK_SECONDS = 60
# Entries per script call when a whole timeline is loaded (keeps each call short: Redis runs one at a time).
ADD_CHUNK = 2_000


def _by_day(entries: Iterable[Entry]) -> dict[date, list[bytes]]:
    grouped: dict[date, list[bytes]] = defaultdict(list)
    for day, member in entries:
        grouped[day].append(member)
    return grouped


def _bucket_layout(reader: uuid.UUID, days: Iterable[date]) -> tuple[list[str], list[int], dict[date, int]]:
    """Bucket keys, their EXPIREATs, and each day's 1-based bucket number in the key list."""
    ordered = sorted(set(days))
    return (
        [keys.bucket_key(reader, day) for day in ordered],
        [keys.expire_at(day) for day in ordered],
        {day: number for number, day in enumerate(ordered, start=1)},
    )


def _follow_state_call(reader: uuid.UUID, followee: uuid.UUID, code: int, entries: Sequence[Entry]) -> Call:
    bucket_keys, expire_ats, number = _bucket_layout(reader, (day for day, _ in entries))
    args: list[Any] = [followee.bytes, code, keys.FOLLOW_STATE_TTL_SECONDS, *expire_ats]
    for day, member in entries:
        args += [number[day], member]
    return [keys.follow_state_key(reader), keys.marker_key(reader), *bucket_keys], args


def _add_call(reader: uuid.UUID, entries: Sequence[AuthoredEntry]) -> Call:
    bucket_keys, expire_ats, number = _bucket_layout(reader, (day for _, day, _ in entries))
    args: list[Any] = list(expire_ats)
    for author, day, member in entries:
        args += [author.bytes, number[day], member]
    return [keys.follow_state_key(reader), *bucket_keys], args


class Buckets:
    def __init__(self, redis: RedisClient, scripts: Scripts) -> None:
        self.redis = redis
        self.scripts = scripts

    async def add(self, readers: Sequence[uuid.UUID], author: uuid.UUID, entries: Sequence[Entry]) -> None:
        """Fanout: put one author's entries into each reader's timeline, one round trip for the batch."""
        if not readers or not entries:
            return
        authored = [(author, day, member) for day, member in entries]
        await self.scripts.run_many(
            self.scripts.add_entries, [_add_call(reader, authored) for reader in readers]
        )

    async def add_authored(self, reader: uuid.UUID, entries: Sequence[AuthoredEntry]) -> None:
        """Load a reader's timeline (a rebuild): many authors, a chunk per script call."""
        chunks = [entries[at : at + ADD_CHUNK] for at in range(0, len(entries), ADD_CHUNK)]
        if chunks:
            await self.scripts.run_many(
                self.scripts.add_entries, [_add_call(reader, chunk) for chunk in chunks]
            )

    async def remove(self, readers: Sequence[uuid.UUID], entries: Iterable[Entry]) -> None:
        """Take entries out of each reader's timeline (a deleted record: it can never come back)."""
        grouped = _by_day(entries)
        if not readers or not grouped:
            return
        pipe = self.redis.pipeline(transaction=False)
        for reader in readers:
            for day, members in grouped.items():
                pipe.zrem(keys.bucket_key(reader, day), *members)
        await pipe.execute()

    async def set_follow_state(
        self, reader: uuid.UUID, followee: uuid.UUID, code: int, entries: Sequence[Entry]
    ) -> bool:
        """Apply a follow (odd ``code``) or unfollow with the followee's window entries; False when a newer
        change of this pair is already there."""
        call_keys, args = _follow_state_call(reader, followee, code, entries)
        return bool(await self.scripts.set_follow_state(keys=call_keys, args=args))

    async def forget_author(
        self, readers: Sequence[uuid.UUID], author: uuid.UUID, entries: Sequence[Entry]
    ) -> None:
        """A deleted account, for each reader who followed it: unfollowed with a code no follow change can
        beat (so no stale fanout or follow ever puts its records back), its entries taken out. One round trip
        for the batch."""
        calls = [_follow_state_call(reader, author, keys.AUTHOR_GONE, entries) for reader in readers]
        if calls:
            await self.scripts.run_many(self.scripts.set_follow_state, calls)

    async def forget_reader(self, reader: uuid.UUID, days: Sequence[date]) -> None:
        """A deleted account's own timeline: every key it has (they share a slot: one command)."""
        reader_keys = [keys.marker_key(reader), keys.follow_state_key(reader), keys.rebuild_lock_key(reader)]
        await self.redis.delete(*reader_keys, *(keys.bucket_key(reader, day) for day in days))

    async def is_warm(self, reader: uuid.UUID) -> bool:
        return bool(await self.redis.exists(keys.marker_key(reader)))

    async def clear(self, reader: uuid.UUID, days: Sequence[date]) -> None:
        """Forget a reader's timeline (marker first, so nobody reads it while it is rebuilt). The follow
        state stays: it still guards against stale writers."""
        await self.redis.delete(keys.marker_key(reader), *(keys.bucket_key(reader, day) for day in days))

    async def fill(
        self, reader: uuid.UUID, entries: Sequence[AuthoredEntry], *, seen: float, ttl_seconds: int
    ) -> bool:
        """Load a rebuilt timeline and mark it warm for ``ttl_seconds``; False if Redis lost data meanwhile.

        The marker is only written while the rebuild lock still exists: if Redis was flushed or restarted
        since the rebuild began, the lock is gone with the entries, and a marker over a partial timeline would
        be served as the truth. Without the marker the next read simply rebuilds again.
        """
        await self.add_authored(reader, entries)
        key, lock = keys.marker_key(reader), keys.rebuild_lock_key(reader)
        # A new marker starts its follow version at a value no earlier marker of this reader had, so a cache
        # keyed on the version can never mistake the new timeline for an old one.
        first_version = str(time.time_ns() // 1000)
        mark = self.scripts.mark_if_exists
        return bool(await mark(keys=[key, lock], args=[str(seen), ttl_seconds, first_version]))

    async def mark_seen(self, reader: uuid.UUID, *, seen: float, ttl_seconds: int) -> bool:
        """Refresh a warm timeline's activity stamp and lifetime; never resurrect a marker Redis has lost."""
        key = keys.marker_key(reader)
        return bool(await self.scripts.mark_if_exists(keys=[key, key], args=[str(seen), ttl_seconds, ""]))

    async def lock_rebuild(self, reader: uuid.UUID) -> bool:
        """One rebuild per reader at a time, across every API process."""
        return bool(
            await self.redis.set(keys.rebuild_lock_key(reader), b"1", nx=True, ex=REBUILD_LOCK_SECONDS)
        )

    async def unlock_rebuild(self, reader: uuid.UUID) -> None:
        await self.redis.delete(keys.rebuild_lock_key(reader))
