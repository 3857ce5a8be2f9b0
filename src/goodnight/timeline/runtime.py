"""Everything the Redis timelines need at run time, built once per process.

A worker process needs only what applies outbox events (``TimelineWriter``); an API process also serves
feed pages from the timelines (``Timeline``, whose reader is the feed's ``FastFeed``) and applies the
actor's own writes before answering them.
"""

from __future__ import annotations

from dataclasses import dataclass

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.jobs.handlers import Handlers
from goodnight.redis_client import REDIS_ERRORS, RedisClient, connect
from goodnight.timeline.fanout import Fanout, InlineEvent
from goodnight.timeline.lean_redis import LeanRedis
from goodnight.timeline.reader import TimelineReader
from goodnight.timeline.store import TimelineStore


@dataclass
class TimelineWriter:
    redis: RedisClient
    store: TimelineStore
    fanout: Fanout

    @classmethod
    def build(cls, settings: Settings, database: Database) -> TimelineWriter:
        store = TimelineStore(connect(settings))
        return TimelineWriter(store.redis, store, Fanout(database, store, settings))

    def subscribe(self, handlers: Handlers) -> None:
        self.fanout.subscribe(handlers)

    async def close(self) -> None:
        await self.redis.aclose()


@dataclass
class Timeline(TimelineWriter):
    reader: TimelineReader
    # The lean client of the feed page's two reads; None where redis-py serves them.
    lean: LeanRedis | None

    @classmethod
    def build(cls, settings: Settings, database: Database, *, lean_reads: bool = True) -> Timeline:
        """``lean_reads=False`` keeps every command on redis-py (a traced process: its instrumentation
        records redis-py's commands only)."""
        lean = LeanRedis.for_settings(settings) if lean_reads else None
        store = TimelineStore(connect(settings), lean)
        reader = TimelineReader(database, store, settings)
        return cls(store.redis, store, Fanout(database, store, settings), reader, lean)

    def subscribe(self, handlers: Handlers) -> None:
        self.fanout.subscribe(handlers, now=self.apply_now)

    async def apply_now(self, event: InlineEvent) -> None:
        """Apply an event inside the request that caused it (read-your-writes), unless Redis is known to be
        away: then the request must not wait for a timeout, and the outbox applies the event later."""
        if not self.reader.gate.breaker.allows():
            return
        try:
            await self.fanout.apply_now(event)
        except REDIS_ERRORS:
            self.reader.gate.redis_failed()
            raise

    async def close(self) -> None:
        await self.reader.drain_background()
        if self.lean is not None:
            await self.lean.close()
        await super().close()
