"""The outbox in one API process: the handlers registered at start-up, the publisher services write events
with, and the worker that applies them (run inside the process when ``GOODNIGHT_EMBEDDED_WORKER`` is on)."""

from __future__ import annotations

import asyncio
import contextlib

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.jobs.handlers import Handlers
from goodnight.jobs.publish import DISABLED, Events
from goodnight.jobs.worker import Worker


def worker_for(database: Database, handlers: Handlers, settings: Settings) -> Worker:
    return Worker(database, handlers.dispatch, settings, transient=handlers.outages)


class Jobs:
    def __init__(self, database: Database, settings: Settings, handlers: Handlers, *, embedded: bool) -> None:
        self.handlers = handlers
        self.worker = worker_for(database, handlers, settings)
        # Nothing consumes the outbox (no handler registered): services write no events at all.
        self.embedded = embedded and handlers.consumes
        self.events = (
            Events(
                enabled=True,
                apply=handlers.apply_now,
                wake=self.worker.wake if self.embedded else None,
            )
            if handlers.consumes
            else DISABLED
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the embedded worker (what makes a single 'goodnight serve' complete)."""
        if self.embedded:
            self._task = asyncio.get_running_loop().create_task(self.worker.run(self._stop))

    async def close(self) -> None:
        self._stop.set()
        self.worker.wake()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)
