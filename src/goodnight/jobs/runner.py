"""Process-level entry points for background work: standalone workers and operator commands."""

from __future__ import annotations

import asyncio
import logging
import signal

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.jobs import outbox
from goodnight.logging_setup import configure_logging
from goodnight.observability.worker_metrics import worker_metrics
from goodnight.timeline.runtime import Timeline

logger = logging.getLogger("goodnight.worker")


async def run_workers(
    settings: Settings, concurrency: int, metrics_at: tuple[str, int] | None = None
) -> None:
    """Run ``concurrency`` workers until SIGINT/SIGTERM; a second signal is not needed, shutdown is quick.
    With ``metrics_at`` (host, port), ``/metrics`` is served there."""
    configure_logging(settings.env)
    database = Database(settings)
    timeline = Timeline.build(settings, database)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    logger.info("outbox worker started (%s in this process)", concurrency)
    try:
        async with worker_metrics(settings, database, metrics_at):
            await asyncio.gather(*(timeline.worker.run(stop) for _ in range(concurrency)))
    finally:
        await timeline.close()
        await database.dispose()
        logger.info("outbox worker stopped")


async def read_status(settings: Settings) -> outbox.OutboxStatus:
    database = Database(settings)
    try:
        async with database.reader() as session:
            return await outbox.status(session)
    finally:
        await database.dispose()


async def retry_dead(settings: Settings) -> int:
    database = Database(settings)
    try:
        async with database.writer() as session:
            count = await outbox.retry_dead(session)
            await session.commit()
            return count
    finally:
        await database.dispose()
