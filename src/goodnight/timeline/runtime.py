"""Everything the Redis timeline needs at run time, built once per process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.jobs.worker import Worker
from goodnight.timeline.fanout import Fanout
from goodnight.timeline.reader import TimelineReader
from goodnight.timeline.redis_client import REDIS_ERRORS, REDIS_UNAVAILABLE, RedisClient, connect
from goodnight.timeline.store import TimelineStore

logger = logging.getLogger("goodnight.timeline")


@dataclass
class Timeline:
    redis: RedisClient
    store: TimelineStore
    fanout: Fanout
    reader: TimelineReader
    worker: Worker
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, settings: Settings, database: Database) -> Timeline:
        redis = connect(settings)
        store = TimelineStore(redis)
        fanout = Fanout(database, store, settings)
        return cls(
            redis=redis,
            store=store,
            fanout=fanout,
            reader=TimelineReader(database, store, settings),
            worker=Worker(database, fanout.apply, settings, transient=REDIS_UNAVAILABLE),
        )

    async def apply_now(self, kind: str, payload: dict[str, Any]) -> None:
        """Apply an event inside the request that caused it (read-your-writes), unless Redis is known to be
        away: then the request must not wait for a timeout, and the outbox applies the event later."""
        if not self.reader.breaker.allows():
            return
        try:
            await self.fanout.apply_now(kind, payload)
        except REDIS_ERRORS:
            self.reader.redis_failed()
            raise

    def start_worker(self) -> None:
        """Run one outbox worker inside this process (what makes a single 'goodnight serve' complete)."""
        self._task = asyncio.get_running_loop().create_task(self.worker.run(self._stop))

    async def close(self) -> None:
        self._stop.set()
        self.worker.wake()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)
        await self.reader.drain_background()
        await self.redis.aclose()
