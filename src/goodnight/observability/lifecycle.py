"""The metrics upkeep of one process, from start-up to exit: sampling, and leaving the sums cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.observability.multiprocess import forget_dead_processes, process_exiting
from goodnight.observability.sampler import Sampler


@dataclass
class ProcessMetrics:
    _stop: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None

    @classmethod
    def start(
        cls,
        settings: Settings,
        database: Database,
        *,
        outbox: bool,
        breaker_open: Callable[[], bool] | None = None,
    ) -> ProcessMetrics:
        """Start sampling (nothing at all when metrics are off)."""
        if not settings.metrics:
            return cls()
        forget_dead_processes()
        sampler = Sampler(database, outbox=outbox, breaker_open=breaker_open)
        stop = asyncio.Event()
        return cls(stop, asyncio.get_running_loop().create_task(sampler.run(stop)))

    async def stop(self) -> None:
        if self._stop is None or self._task is None:
            return
        self._stop.set()
        await self._task
        process_exiting()
