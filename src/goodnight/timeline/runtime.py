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
from goodnight.timeline.reader import TimelineReader
from goodnight.timeline.store import TimelineStore


@dataclass
class TimelineWriter:
    redis: RedisClient
    store: TimelineStore
    fanout: Fanout

    @classmethod
    def build(cls, settings: Settings, database: Database) -> TimelineWriter:
        redis = connect(settings)
        store = TimelineStore(redis)
        return TimelineWriter(redis, store, Fanout(database, store, settings))

    def subscribe(self, handlers: Handlers) -> None:
        self.fanout.subscribe(handlers)

    async def close(self) -> None:
        await self.redis.aclose()


@dataclass
class Timeline(TimelineWriter):
    reader: TimelineReader

    @classmethod
    def build(cls, settings: Settings, database: Database) -> Timeline:
        writer = TimelineWriter.build(settings, database)
        reader = TimelineReader(database, writer.store, settings)
        return cls(writer.redis, writer.store, writer.fanout, reader)

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
        await super().close()
