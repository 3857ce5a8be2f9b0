"""Process-level entry points for background work: standalone workers and operator commands."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.jobs import outbox
from goodnight.jobs.handlers import Handlers
from goodnight.jobs.runtime import worker_for
from goodnight.logging_setup import configure_logging

logger = logging.getLogger("goodnight.worker")

# The composition root's part of a worker process: given the settings and the database, register every
# consumer of the outbox on the handlers, and release what they hold (connections) when the block ends.
Consumers = Callable[[Settings, Database, Handlers], AbstractAsyncContextManager[None]]


async def run_workers(settings: Settings, concurrency: int, consumers: Consumers) -> None:
    """Run ``concurrency`` workers until SIGINT/SIGTERM; a second signal is not needed, shutdown is quick."""
    configure_logging(settings.env)
    database = Database(settings)
    handlers = Handlers()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with consumers(settings, database, handlers):
            worker = worker_for(database, handlers, settings)
            logger.info("outbox worker started (%s in this process)", concurrency)
            await asyncio.gather(*(worker.run(stop) for _ in range(concurrency)))
    finally:
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
