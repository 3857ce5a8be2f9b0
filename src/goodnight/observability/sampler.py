"""Gauges read every few seconds by each process, never per scrape: the database pool, the Redis breaker,
and the outbox backlog (one SQL query per process every ``OUTBOX_SAMPLE_SECONDS``, however often Prometheus
scrapes and however many workers answer it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from sqlalchemy.pool import QueuePool

from goodnight.db import Database, is_database_unavailable
from goodnight.jobs import outbox
from goodnight.kit.background import BackgroundFailures
from goodnight.observability.metrics import (
    DB_POOL_CONNECTIONS,
    OUTBOX_EVENTS,
    OUTBOX_OLDEST_PENDING_AGE,
    REDIS_BREAKER_OPEN,
)

logger = logging.getLogger("goodnight.metrics")
SAMPLE_SECONDS = 2.0
OUTBOX_SAMPLE_SECONDS = 10.0


class Sampler:
    def __init__(
        self,
        database: Database,
        *,
        outbox: bool,
        breaker_open: Callable[[], bool] | None = None,
        outbox_every: float = OUTBOX_SAMPLE_SECONDS,
    ) -> None:
        self.database = database
        self.outbox = outbox  # only where the outbox is in use (a Redis timeline is configured)
        self.breaker_open = breaker_open
        self.outbox_every = outbox_every
        self._failures = BackgroundFailures(logger, is_database_unavailable)
        self._outbox_due = 0.0

    async def sample(self) -> None:
        """One round: what this process holds, and the outbox when its turn has come."""
        self._sample_pool()
        if self.breaker_open is not None:
            REDIS_BREAKER_OPEN.set(1 if self.breaker_open() else 0)
        if self.outbox and time.monotonic() >= self._outbox_due:
            self._outbox_due = time.monotonic() + self.outbox_every
            try:
                await self._sample_outbox()
            except Exception as exc:  # the gauges keep their last values; the next round tries again
                self._failures.report(exc, "could not sample the outbox for the metrics")

    def _sample_pool(self) -> None:
        pool = self.database.engine.pool
        if not isinstance(pool, QueuePool):  # SQLite in memory: one static connection, nothing to watch
            return
        in_use, idle = pool.checkedout(), pool.checkedin()
        DB_POOL_CONNECTIONS.labels("in_use").set(in_use)
        DB_POOL_CONNECTIONS.labels("idle").set(idle)
        # Open beyond the configured pool size (the pool may grow to twice it: ``db.max_connections``).
        DB_POOL_CONNECTIONS.labels("overflow").set(max(0, in_use + idle - self.database.pool_size))

    async def _sample_outbox(self) -> None:
        async with self.database.reader() as session:
            status = await outbox.status(session)
        OUTBOX_EVENTS.labels("pending").set(status.pending)
        OUTBOX_EVENTS.labels("in_flight").set(status.in_flight)
        OUTBOX_EVENTS.labels("dead").set(status.dead)
        OUTBOX_OLDEST_PENDING_AGE.set(status.oldest_age_seconds or 0.0)

    async def run(self, stop: asyncio.Event, every: float = SAMPLE_SECONDS) -> None:
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)
