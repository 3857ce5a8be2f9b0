"""Redis operations on timelines. Every call here is idempotent, so outbox redelivery is harmless.

What a page read from Redis may trust, and what keeps it true without asking the database:
* a reader's buckets only ever receive a followee's records through ``scripts.ADD_ENTRIES`` or
  ``scripts.SET_FOLLOW_STATE``, which consult the reader's follow-state hash in the same atomic step: once an
  unfollow is recorded there, no writer holding an older read of the follow graph can put that followee's
  records back;
* a deleted record's rendering is overwritten with a tombstone, which renderings written later never replace
  (``SET NX``), so a page skips it however many stale entries still point at it.
"""

from __future__ import annotations

import asyncio
import heapq
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from redis.asyncio import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from goodnight.feed.render import TOMBSTONE
from goodnight.timeline import keys, scripts
from goodnight.timeline.redis_client import RedisClient

Entry = tuple[date, bytes]  # (bucket day, member)
AuthoredEntry = tuple[uuid.UUID, date, bytes]  # (author, bucket day, member)
Rendering = tuple[uuid.UUID, date, bytes]  # (record, bucket day, stored rendering)

REBUILD_LOCK_SECONDS = 60
# Entries per script call when a whole timeline is loaded (keeps each call short: Redis runs one at a time).
ADD_CHUNK = 2_000
CLUSTER_CONCURRENCY = 64


@dataclass(frozen=True, slots=True)
class Marker:
    seen: float  # when the reader was last marked active, seconds since the epoch
    follows: int  # moves on every follow and unfollow the reader makes


@dataclass(frozen=True, slots=True)
class Candidates:
    members: list[list[bytes]]  # per day bucket, newest first: (duration, id) descending
    count: int  # how many were asked of each bucket: a bucket that returned fewer has nothing more


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
    duplicates, and whether nothing lies beyond them (what the page script does server-side).

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


def _ensure_celebrity_version(pipe: Any) -> None:
    """A version Redis has lost restarts at a random value, never at one an API process may still hold
    from an earlier life of this Redis."""
    pipe.set(keys.CELEBRITIES_VERSION, secrets.randbelow(2**62), nx=True)


def _bump_celebrity_version(pipe: Any) -> None:
    _ensure_celebrity_version(pipe)
    pipe.incr(keys.CELEBRITIES_VERSION)


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


def _follow_state_call(
    reader: uuid.UUID, followee: uuid.UUID, code: int, entries: Sequence[Entry]
) -> tuple[list[Any], list[Any]]:
    bucket_keys, expire_ats, number = _bucket_layout(reader, (day for day, _ in entries))
    args: list[Any] = [followee.bytes, code, keys.FOLLOW_STATE_TTL_SECONDS, *expire_ats]
    for day, member in entries:
        args += [number[day], member]
    return [keys.follow_state_key(reader), keys.marker_key(reader), *bucket_keys], args


def _add_call(reader: uuid.UUID, entries: Sequence[AuthoredEntry]) -> tuple[list[Any], list[Any]]:
    bucket_keys, expire_ats, number = _bucket_layout(reader, (day for _, day, _ in entries))
    args: list[Any] = list(expire_ats)
    for author, day, member in entries:
        args += [author.bytes, number[day], member]
    return [keys.follow_state_key(reader), *bucket_keys], args


class TimelineStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._mark_if_exists = redis.register_script(scripts.MARK_IF_EXISTS)
        self._read = redis.register_script(scripts.READ)
        self._add_entries = redis.register_script(scripts.ADD_ENTRIES)
        self._set_follow_state = redis.register_script(scripts.SET_FOLLOW_STATE)
        self._rerender = redis.register_script(scripts.RERENDER)

    async def _run_pipelined(self, script: AsyncScript, calls: Sequence[tuple[list[Any], list[Any]]]) -> None:
        """Many calls of one script in one round trip; after a restart emptied Redis's script cache, load
        the script and run them all again (every script here is idempotent)."""
        if isinstance(self.redis, RedisCluster):
            # redis-py's Cluster pipelines refuse scripts: concurrent calls, each routed to its node.
            for at in range(0, len(calls), CLUSTER_CONCURRENCY):
                chunk = calls[at : at + CLUSTER_CONCURRENCY]
                await asyncio.gather(*(script(keys=ks, args=args) for ks, args in chunk))
            return
        for _ in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for call_keys, call_args in calls:
                pipe.evalsha(script.sha, len(call_keys), *call_keys, *call_args)
            results = await pipe.execute(raise_on_error=False)
            if not any(isinstance(result, NoScriptError) for result in results):
                for result in results:
                    if isinstance(result, Exception):
                        raise result
                return
            await self.redis.script_load(script.script)
        raise NoScriptError("the script cache keeps losing the timeline scripts")

    async def add(self, readers: Sequence[uuid.UUID], author: uuid.UUID, entries: Sequence[Entry]) -> None:
        """Fanout: put one author's entries into each reader's timeline, one round trip for the batch."""
        if not readers or not entries:
            return
        authored = [(author, day, member) for day, member in entries]
        await self._run_pipelined(self._add_entries, [_add_call(reader, authored) for reader in readers])

    async def add_authored(self, reader: uuid.UUID, entries: Sequence[AuthoredEntry]) -> None:
        """Load a reader's timeline (a rebuild): many authors, a chunk per script call."""
        chunks = [entries[at : at + ADD_CHUNK] for at in range(0, len(entries), ADD_CHUNK)]
        if chunks:
            await self._run_pipelined(self._add_entries, [_add_call(reader, chunk) for chunk in chunks])

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
        return bool(await self._set_follow_state(keys=call_keys, args=args))

    async def forget_author(
        self, readers: Sequence[uuid.UUID], author: uuid.UUID, entries: Sequence[Entry]
    ) -> None:
        """A deleted account, for each reader who followed it: unfollowed with a code no follow change can
        beat (so no stale fanout or follow ever puts its records back), its entries taken out. One round trip
        for the batch."""
        calls = [_follow_state_call(reader, author, keys.AUTHOR_GONE, entries) for reader in readers]
        if calls:
            await self._run_pipelined(self._set_follow_state, calls)

    async def forget_reader(self, reader: uuid.UUID, days: Sequence[date]) -> None:
        """A deleted account's own timeline: every key it has (they share a slot: one command)."""
        reader_keys = [keys.marker_key(reader), keys.follow_state_key(reader), keys.rebuild_lock_key(reader)]
        await self.redis.delete(*reader_keys, *(keys.bucket_key(reader, day) for day in days))

    async def read(
        self, reader: uuid.UUID, first: date, last: date, after: bytes | None, count: int
    ) -> tuple[Candidates, Marker] | None:
        """Up to ``count`` members of each day bucket from ``last`` back to ``first`` after the cursor
        ``after``, in one round trip; None when the timeline is cold (no marker): it must not be served as
        the truth."""
        upper = b"(" + after if after is not None else b"+"
        days = keys.bucket_suffixes(first, last)
        args: list[bytes | str | int] = [upper, count, keys.bucket_prefix(reader), days]
        found = await self._read(keys=[keys.marker_key(reader)], args=args)
        if found is None:
            return None
        seen, follows, *per_day = found
        return Candidates(per_day, count), Marker(float(seen), int(follows))

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
        the timeline is cold. Two round trips: the reader's keys, then the renderings, which live in other
        Cluster slots. (Doing both in one script, merge included, measured no faster on a single Redis: what
        it saves the client it costs the server.)"""
        found = await self.read(reader, first, last, after, count)
        if found is None:
            return None
        candidates, marker = found
        members, exhausted = merge(candidates, celebrity, count)
        version, renderings = await self.renderings(members)
        return PageRead(marker, version, members, renderings, exhausted)

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
        return bool(
            await self._mark_if_exists(keys=[key, lock], args=[str(seen), ttl_seconds, first_version])
        )

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

    # Renderings: each record's feed item, stored once however many timelines hold it.

    async def put_renderings(self, renderings: Sequence[Rendering]) -> None:
        """Store renderings that are not there yet; ``NX`` never replaces one, nor a deleted record's
        tombstone."""
        if not renderings:
            return
        pipe = self.redis.pipeline(transaction=False)
        for record_id, day, rendering in renderings:
            pipe.set(keys.rendering_key(record_id), rendering, nx=True, exat=keys.expire_at(day))
        await pipe.execute()

    async def rerender(self, renderings: Sequence[Rendering], *, now: float) -> None:
        """Replace renderings (their author was renamed), but never a deleted record's tombstone. Those whose
        day has left every window (``now``, epoch seconds) are skipped: no page can reach them."""
        calls = [
            ([keys.rendering_key(record_id)], [rendering, keys.expire_at(day)])
            for record_id, day, rendering in renderings
            if keys.expire_at(day) > now
        ]
        if calls:
            await self._run_pipelined(self._rerender, calls)

    async def forget_records(self, records: Iterable[tuple[uuid.UUID, date]]) -> None:
        """Deleted records (id, bucket day): each rendering becomes a tombstone, hiding the record from every
        page at once. That includes a celebrity's records still in the API processes' snapshots: pages fetch
        the renderings of celebrity records too, so the snapshots need no reload (which would cost every
        process a query)."""
        gone = list(records)
        if not gone:
            return
        pipe = self.redis.pipeline(transaction=False)
        for record_id, day in gone:
            pipe.set(keys.rendering_key(record_id), TOMBSTONE, exat=keys.expire_at(day))
        await pipe.execute()

    async def renderings(self, members: Sequence[bytes]) -> tuple[bytes | None, list[bytes | None]]:
        """The celebrity version, and the rendering of each member's record (None if missing), in one round
        trip."""
        names = [keys.CELEBRITIES_VERSION, *(keys.rendering_key_of(member) for member in members)]
        if isinstance(self.redis, RedisCluster):
            found = await self.redis.mget_nonatomic(names)
        else:
            found = await self.redis.mget(names)
        return found[0], found[1:]

    # Celebrities: a global set of users whose records are merged at read time instead of fanned out.

    async def celebrity_version(self) -> bytes:
        """The current version of the celebrities and their records (created, at a random value that no
        earlier life of this Redis had, if Redis has lost it)."""
        pipe = self.redis.pipeline(transaction=False)
        _ensure_celebrity_version(pipe)
        pipe.get(keys.CELEBRITIES_VERSION)
        _, version = await pipe.execute()
        assert isinstance(version, bytes)  # just set, if it was missing
        return version

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

    async def celebrity_changed(self, user_id: uuid.UUID) -> None:
        """A celebrity (new or not) has a new record: make sure it is in the set, and move the version."""
        await self._celebrities_changed("sadd", [user_id.bytes])

    async def remove_celebrity(self, user_id: uuid.UUID) -> None:
        await self._celebrities_changed("srem", [user_id.bytes])

    async def forget_celebrities(self) -> None:
        """Drop the set (bulk loading only: anywhere else members must be removed by backfill)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(keys.CELEBRITIES_READY, keys.CELEBRITIES)
        _bump_celebrity_version(pipe)
        await pipe.execute()

    async def load_celebrities(self, user_ids: Iterable[uuid.UUID]) -> None:
        await self._celebrities_changed("sadd", [user_id.bytes for user_id in user_ids], ready=True)

    async def _celebrities_changed(self, command: str, members: list[bytes], *, ready: bool = False) -> None:
        pipe = self.redis.pipeline(transaction=False)
        if members:
            getattr(pipe, command)(keys.CELEBRITIES, *members)
        if ready:
            pipe.set(keys.CELEBRITIES_READY, b"1")
        _bump_celebrity_version(pipe)  # last: a snapshot taken at the new version sees the change
        await pipe.execute()
