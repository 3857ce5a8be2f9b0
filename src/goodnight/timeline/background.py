"""Work a page starts without waiting for it (rebuilds, activity stamps): each task is kept referenced until
it is done, and its failure is logged, quietly during an outage; the next read simply tries again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from goodnight.timeline.outage import background_failures


class Background:
    def __init__(self, logger: logging.Logger) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = background_failures(logger)

    def spawn(self, work: Coroutine[Any, Any, object], failure: str, *args: object) -> None:
        """Run ``work``; if it fails, log ``failure`` (a format string, with ``args``)."""
        task = asyncio.get_running_loop().create_task(self._run(work, failure, args))
        self._tasks.add(task)  # keep a reference until done, or the task may be collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def _run(self, work: Coroutine[Any, Any, object], failure: str, args: tuple[object, ...]) -> None:
        try:
            await work
        except Exception as exc:
            self._failures.report(exc, failure, *args)

    async def drain(self) -> None:
        """Wait for the work in flight (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
