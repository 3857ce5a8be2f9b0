"""The outbox worker: claim a batch under a lease, apply each event, delete what succeeded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from goodnight.config import Settings
from goodnight.db import Database, is_database_unavailable
from goodnight.jobs import outbox
from goodnight.jobs.events import Apply
from goodnight.kit.background import BackgroundFailures
from goodnight.observability import metrics
from goodnight.observability.event_context import mark_failed, resumed

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

logger = logging.getLogger("goodnight.worker")
BATCH_SIZE = 50
# How soon an event is tried again when the infrastructure, not the event, failed.
RETRY_TRANSIENT = timedelta(seconds=1)


class Worker:
    def __init__(
        self,
        database: Database,
        apply: Apply,
        settings: Settings,
        *,
        transient: tuple[type[BaseException], ...] = (),
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.database = database
        self.apply = apply
        # Errors that mean "a dependency is away" (Redis unreachable): the event is handed back untouched.
        self.transient = transient
        self.lease = timedelta(seconds=settings.outbox_lease_seconds)
        self.max_attempts = settings.outbox_max_attempts
        self.poll_seconds = settings.outbox_poll_seconds
        self.batch_size = batch_size
        self._wake = asyncio.Event()
        # While the database is down every poll fails alike: one line a minute, not five tracebacks a second.
        self._failures = BackgroundFailures(logger, is_database_unavailable)
        # Set when the process traces: each event is then applied in a span of the request's trace.
        self.tracer: Tracer | None = None

    def wake(self) -> None:
        """Work was just committed in this process: stop waiting for the next poll."""
        self._wake.set()

    async def drain_once(self) -> int:
        """Process one batch; returns how many events were claimed."""
        async with self.database.writer() as session:
            claimed = await outbox.claim(session, limit=self.batch_size, lease=self.lease)
            await session.commit()
        done: list[int] = []
        blocked: BaseException | None = None
        for event in claimed:
            if blocked is not None:  # the dependency is away: hand the rest back without trying each one
                await self._release(event, blocked)
                continue
            # Under the context of the request that wrote the event: its lines name that request.
            with resumed(event.context, self.tracer, f"outbox {event.kind}", _span_attributes(event)):
                try:
                    await self.apply(event.kind, event.payload)
                except self.transient as exc:
                    blocked = exc
                    await self._release(event, exc)
                except Exception as exc:
                    await self._failed(event, exc)
                else:
                    done.append(event.id)
                    metrics.event_applied(event.kind, event.created_at)
        if done:
            async with self.database.writer() as session:
                await outbox.complete(session, done)
                await session.commit()
        if blocked is not None:
            logger.warning("outbox paused for %ss: %s", RETRY_TRANSIENT.total_seconds(), blocked)
        return len(claimed)

    async def _release(self, event: outbox.Claimed, exc: BaseException) -> None:
        mark_failed(exc)
        async with self.database.writer() as session:
            await outbox.release(session, event, f"{type(exc).__name__}: {exc}", delay=RETRY_TRANSIENT)
            await session.commit()
        metrics.event_failed(event.kind, dead=False)

    async def _failed(self, event: outbox.Claimed, exc: Exception) -> None:
        mark_failed(exc)
        async with self.database.writer() as session:
            dead = await outbox.fail(
                session, event, f"{type(exc).__name__}: {exc}", max_attempts=self.max_attempts
            )
            await session.commit()
        metrics.event_failed(event.kind, dead=dead)
        log = logger.error if dead else logger.warning
        parked = " and is parked as dead" if dead else ""
        log(
            "outbox event %s (%s) failed on attempt %s%s: %s",
            event.id,
            event.kind,
            event.attempts,
            parked,
            exc,
            extra={"event_id": event.id, "event_kind": event.kind},
        )

    async def drain(self) -> int:
        """Process until nothing is ready (tests and benchmarks drain the outbox this way)."""
        total = 0
        while count := await self.drain_once():
            total += count
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set, waking early when this process commits new events."""
        while not stop.is_set():
            try:
                claimed = await self.drain_once()
            except Exception as exc:
                self._failures.report(exc, "outbox worker error; retrying shortly")
                claimed = 0
            if claimed:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)


def _span_attributes(event: outbox.Claimed) -> dict[str, str | int]:
    return {
        "goodnight.outbox.event_id": event.id,
        "goodnight.outbox.kind": event.kind,
        "goodnight.outbox.attempt": event.attempts,
    }
