"""Publishing domain events from services, inside their transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.db import after_commit
from goodnight.jobs import outbox
from goodnight.jobs.events import Event

ApplyNow = Callable[[Event], Awaitable[None]]


class Events:
    """Writes events to the outbox when something consumes them (a handler is registered); otherwise does
    nothing.

    ``apply_now`` events are also applied right after commit, before the response is sent, so the actor
    reads their own write; the outbox copy makes it durable if that attempt fails.
    """

    def __init__(
        self, *, enabled: bool, apply: ApplyNow | None = None, wake: Callable[[], None] | None = None
    ) -> None:
        self.enabled = enabled
        self._apply = apply
        self._wake = wake

    async def publish(self, session: AsyncSession, event: Event, *, apply_now: bool = False) -> None:
        if not self.enabled:
            return
        await outbox.enqueue(session, event.kind, event.to_payload())
        if apply_now and self._apply is not None:
            apply = self._apply

            async def apply_event() -> None:
                await apply(event)

            after_commit(session, apply_event)
        if self._wake is not None:
            wake = self._wake

            async def wake_worker() -> None:
                wake()

            after_commit(session, wake_worker)


DISABLED = Events(enabled=False)
