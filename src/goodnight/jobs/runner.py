"""Process-level entry points for background work: standalone workers and operator commands."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.jobs import outbox
from goodnight.jobs.handlers import Handlers
from goodnight.jobs.runtime import worker_for
from goodnight.logging_setup import configure_logging
from goodnight.observability.switch import start_tracing
from goodnight.observability.worker_metrics import worker_metrics

logger = logging.getLogger("goodnight.worker")

# The composition root's part of a worker process: given the settings and the database, register every
# consumer of the outbox on the handlers, and release what they hold (connections) when the block ends.
Consumers = Callable[[Settings, Database, Handlers], AbstractAsyncContextManager[None]]


async def run_workers(
    settings: Settings,
    concurrency: int,
    consumers: Consumers,
    metrics_at: tuple[str, int] | None = None,
) -> None:
    """Run ``concurrency`` workers until SIGINT/SIGTERM; a second signal is not needed, shutdown is quick.
    With ``metrics_at`` (host, port), ``/metrics`` is served there."""
    tracing = start_tracing()
    configure_logging(settings.env, trace_ids=tracing is not None)
    database = Database(settings)
    handlers = Handlers()
    if tracing is not None:
        tracing.instrument_engine(database.engine)
        tracing.instrument_redis()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with consumers(settings, database, handlers), worker_metrics(settings, database, metrics_at):
            worker = worker_for(database, handlers, settings)
            if tracing is not None:
                worker.tracer = tracing.tracer
            logger.info("outbox worker started (%s in this process)", concurrency)
            await asyncio.gather(*(worker.run(stop) for _ in range(concurrency)))
    finally:
        await database.dispose()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)
        logger.info("outbox worker stopped")


async def read_status(settings: Settings) -> outbox.OutboxStatus:
    async with _session(settings) as session:
        return await outbox.status(session)


async def retry_dead(settings: Settings) -> int:
    async with _session(settings, write=True) as session:
        count = await outbox.retry_dead(session)
        await session.commit()
        return count


async def list_dead(settings: Settings, limit: int) -> tuple[int, list[outbox.DeadEvent]]:
    async with _session(settings) as session:
        return await outbox.dead_events(session, limit=limit)


async def retry_dead_event(settings: Settings, event_id: int) -> outbox.RetryOutcome:
    async with _session(settings, write=True) as session:
        outcome = await outbox.retry_dead_event(session, event_id)
        await session.commit()
        return outcome


@asynccontextmanager
async def _session(settings: Settings, *, write: bool = False) -> AsyncIterator[AsyncSession]:
    """One session on an engine of its own, for a command that runs once and exits."""
    database = Database(settings)
    try:
        async with (database.writer if write else database.reader)() as session:
            yield session
    finally:
        await database.dispose()
