"""The metrics upkeep of one process, from start-up to exit: sampling, and leaving the sums cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.observability.multiprocess import forget_dead_processes, process_exiting
from goodnight.observability.sampler import Sampler

if TYPE_CHECKING:
    from goodnight.timeline.runtime import Timeline


def feed_breaker_open(timeline: Timeline | None) -> Callable[[], bool] | None:
    """Whether this process's feed reader is skipping Redis right now (looked up each time: tests swap the
    breaker)."""
    if timeline is None:
        return None
    return lambda: not timeline.reader.breaker.allows()


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
