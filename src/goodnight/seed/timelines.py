"""Building the Redis timelines of every active user in bulk, as ``Rebuilds.rebuild`` would one by one.

Active users (``last_active_at`` within ``GOODNIGHT_ACTIVE_DAYS``) are taken a chunk at a time. One SQL query
per chunk streams the ``(follower, record)`` pairs their timelines hold: the completed, in-window records of
everyone they actively follow, celebrities excepted (those are merged at read time). The pairs are grouped
per ``(reader, day)`` bucket and written with one ``ZADD`` + ``EXPIREAT`` per bucket, a whole chunk per
pipeline; then each reader of the chunk gets its marker, as ``Buckets.mark_seen`` sets it. The next
chunk is read from the database while Redis digests the current one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from goodnight.feed.position import POSITION_SIZE, encode_position
from goodnight.feed.window import WINDOW
from goodnight.kit.clock import utcnow
from goodnight.models import Follow, SleepRecord, User
from goodnight.redis_client import RedisClient
from goodnight.seed.resp import CommandSink
from goodnight.timeline import keys, repository
from goodnight.timeline.celebrities import CelebritySet

CHUNK = 500  # readers per SQL query and per Redis pipeline
RENDERINGS_CHUNK = 10_000

# PostgreSQL builds the 20-byte members itself (feed positions: big-endian duration, then the UUID's 16 bytes)
# and concatenates each (reader, day) bucket's members into one value: far fewer rows to decode.
PAIRS_POSTGRESQL = """
SELECT f.follower_id, r.clocked_in_at::date, string_agg(int4send(r.duration_s) || uuid_send(r.id), ''::bytea)
FROM follows f
JOIN users a ON a.id = f.followed_id
JOIN sleep_records r ON r.user_id = f.followed_id
WHERE f.follower_id = ANY($1::uuid[]) AND f.active AND a.followers_count <= $2
  AND r.clocked_in_at >= $3 AND r.duration_s IS NOT NULL
GROUP BY 1, 2
"""


Bucket = tuple[uuid.UUID, date, list[bytes]]  # (reader, day, members)
Readers = Sequence[tuple[uuid.UUID, datetime]]  # (reader, last seen)


@dataclass
class TimelineStats:
    renderings: int = 0
    readers: int = 0
    buckets: int = 0
    entries: int = 0
    celebrities: int = 0
    redis_memory_before: int = 0
    redis_memory_renderings: int = 0  # after the renderings, before the timelines
    redis_memory_after: int = 0


async def has_timeline_keys(redis: RedisClient) -> bool:
    async for _ in redis.scan_iter(match=f"{keys.PREFIX}:*", count=1000):
        return True
    return False


async def clear_timeline_keys(redis: RedisClient) -> int:
    """Delete every Goodnight key (never FLUSHALL: the Redis may hold other data)."""
    removed = 0
    batch: list[Any] = []
    async for key in redis.scan_iter(match=f"{keys.PREFIX}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += await _unlink(redis, batch)
            batch = []
    if batch:
        removed += await _unlink(redis, batch)
    return removed


async def _unlink(redis: RedisClient, batch: list[Any]) -> int:
    pipe = redis.pipeline(transaction=False)
    for key in batch:
        pipe.unlink(key)
    return sum(await pipe.execute())


async def used_memory(redis: RedisClient) -> int:
    info: Any = await redis.info("memory")
    if isinstance(info, dict) and "used_memory" in info:
        return int(info["used_memory"])
    # Redis Cluster: one dict per node.
    return sum(int(node.get("used_memory", 0)) for node in getattr(info, "values", dict)())


class TimelineBuilder:
    def __init__(
        self,
        connection: AsyncConnection,
        redis: RedisClient,
        sink: CommandSink,
        *,
        threshold: int,
        active_days: int,
        marker_ttl: int,
    ) -> None:
        self.connection = connection
        self.redis = redis
        self.sink = sink
        self.celebrity_set = CelebritySet(redis)
        self.threshold = threshold
        self.active_days = active_days
        self.marker_ttl = marker_ttl
        self.stats = TimelineStats()
        self._driver: Any = None

    async def readers(self) -> Readers:
        since = utcnow() - timedelta(days=self.active_days)
        rows = await self.connection.execute(
            sa.select(User.id, User.last_active_at).where(User.last_active_at >= since).order_by(User.id)
        )
        found = [(user_id, seen) for user_id, seen in rows]
        await self.connection.rollback()
        return found

    async def load_celebrities(self) -> list[uuid.UUID]:
        rows = await self.connection.scalars(sa.select(User.id).where(User.followers_count > self.threshold))
        celebrities = list(rows)
        await self.connection.rollback()
        await self.celebrity_set.forget()
        await self.celebrity_set.load(celebrities)
        self.stats.celebrities = len(celebrities)
        return celebrities

    async def count_renderings(self) -> int:
        found = await self.connection.scalar(
            sa.select(sa.func.count())
            .select_from(SleepRecord)
            .where(*repository.in_window(utcnow() - WINDOW))
        )
        await self.connection.rollback()
        return int(found or 0)

    async def store_renderings(self, on_chunk: Callable[[int], None] | None = None) -> None:
        """Every completed record in the window gets its stored feed item (``gn:r<version>:<record>``), as
        fanout would have written it: timelines hold only members, pages are assembled from these."""
        self.stats.redis_memory_before = await used_memory(self.redis)
        query = repository.window_records_query(utcnow() - WINDOW).execution_options(
            yield_per=RENDERINGS_CHUNK
        )
        command = self.sink.command
        result = await self.connection.stream(query)
        async for rows in result.partitions():
            for row in rows:
                record_id, day, rendering = repository.rendering(repository.feed_row(row))
                command("SET", keys.rendering_key(record_id), rendering, "EXAT", keys.expire_at(day))
            await self.sink.flush()
            self.stats.renderings += len(rows)
            if on_chunk is not None:
                on_chunk(len(rows))
        await self.connection.rollback()
        self.stats.redis_memory_renderings = await used_memory(self.redis)

    async def build(self, readers: Readers, on_chunk: Callable[[int], None] | None = None) -> TimelineStats:
        if self.connection.dialect.name == "postgresql":
            self._driver = (await self.connection.get_raw_connection()).driver_connection
        since = utcnow() - WINDOW
        chunks = [readers[start : start + CHUNK] for start in range(0, len(readers), CHUNK)]
        queue: asyncio.Queue[tuple[Readers, list[Bucket]] | None] = asyncio.Queue(2)

        async def produce() -> None:
            for chunk in chunks:
                await queue.put((chunk, await self._buckets([reader for reader, _ in chunk], since)))
            await queue.put(None)

        producer = asyncio.create_task(produce())
        try:
            while (item := await queue.get()) is not None:
                chunk, buckets = item
                await self._write(chunk, buckets)
                if on_chunk is not None:
                    on_chunk(len(chunk))
        finally:
            if not producer.done():
                producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        await producer  # re-raise a failed query
        self.stats.redis_memory_after = await used_memory(self.redis)
        return self.stats

    async def _buckets(self, readers: list[uuid.UUID], since: datetime) -> list[Bucket]:
        """Every (reader, day) bucket of these readers' timelines, with its members."""
        if self._driver is not None:
            naive_since = since.astimezone(UTC).replace(tzinfo=None)
            rows = await self._driver.fetch(PAIRS_POSTGRESQL, readers, self.threshold, naive_since)
            size = POSITION_SIZE
            return [
                (reader, day, [blob[at : at + size] for at in range(0, len(blob), size)])
                for reader, day, blob in rows
            ]
        author = sa.orm.aliased(User)
        query = (
            sa.select(Follow.follower_id, SleepRecord.clocked_in_at, SleepRecord.duration_s, SleepRecord.id)
            .join(author, author.id == Follow.followed_id)
            .join(SleepRecord, SleepRecord.user_id == Follow.followed_id)
            .where(
                Follow.follower_id.in_(readers),
                Follow.active.is_(True),
                author.followers_count <= self.threshold,
                SleepRecord.clocked_in_at >= since,
                SleepRecord.duration_s.is_not(None),
            )
        )
        grouped: dict[tuple[uuid.UUID, date], list[bytes]] = defaultdict(list)
        for follower, clocked_in_at, duration, record_id in await self.connection.execute(query):
            assert duration is not None  # completed records only
            grouped[follower, keys.bucket_day(clocked_in_at)].append(encode_position(duration, record_id))
        await self.connection.rollback()
        return [(reader, day, members) for (reader, day), members in grouped.items()]

    async def _write(self, chunk: Readers, buckets: list[Bucket]) -> None:
        command = self.sink.command
        for reader, day, members in buckets:
            key = keys.bucket_key(reader, day)  # asyncpg's UUIDs are uuid.UUID subclasses
            scored: list[bytes] = [b"0"] * (2 * len(members))
            scored[1::2] = members
            command("ZADD", key, *scored)
            command("EXPIREAT", key, keys.expire_at(day))
            self.stats.entries += len(members)
        self.stats.buckets += len(buckets)
        # Markers last, so a reader is only ever warm once its whole timeline is in: what mark_seen sets,
        # with the time the reader was last seen, living as long as it would have since then.
        now = time.time()
        for reader, last_active_at in chunk:
            seen = last_active_at.timestamp()
            marker = keys.marker_key(reader)
            command("HSET", marker, "seen", str(seen))
            command("EXPIRE", marker, max(60, int(self.marker_ttl - (now - seen))))
        await self.sink.flush()
        self.stats.readers += len(chunk)
