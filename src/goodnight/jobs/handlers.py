"""Which code applies each kind of event: a registry the composition root fills at start-up.

``main`` (the API process) and the worker entry point each build a ``Handlers`` and let every consumer of the
outbox register what it does with the kinds it cares about (the Redis timelines register all of them). The
outbox is only written while something is registered (``consumes``), so a deployment without consumers pays
nothing for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from goodnight.jobs.events import Event, Payload, parse

E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None]]


class Unhandled(LookupError):
    """A stored event of a kind nothing in this process handles."""


class Handlers:
    def __init__(self) -> None:
        self._apply: defaultdict[type[Event], list[Handler[Any]]] = defaultdict(list)
        self._now: defaultdict[type[Event], list[Handler[Any]]] = defaultdict(list)
        self._outages: tuple[type[BaseException], ...] = ()

    def on(self, event_type: type[E], apply: Handler[E], *, now: Handler[E] | None = None) -> None:
        """``apply`` runs in a worker for every event of the type (at least once: it must be idempotent).
        ``now``, if given, also runs right after the commit of a write that publishes one with ``apply_now``,
        before its response (the actor reads their own write); the worker's ``apply`` still follows."""
        self._apply[event_type].append(apply)
        if now is not None:
            self._now[event_type].append(now)

    def on_outage(self, *errors: type[BaseException]) -> None:
        """Errors that mean a dependency of a handler is away, not that the event is bad: a worker hands the
        event back without spending one of its attempts."""
        self._outages = (*self._outages, *errors)

    @property
    def outages(self) -> tuple[type[BaseException], ...]:
        return self._outages

    @property
    def consumes(self) -> bool:
        """Something applies outbox events in this process, so publishing them is worth it."""
        return bool(self._apply)

    async def dispatch(self, kind: str, payload: Payload) -> None:
        """Apply one stored event with every handler of its kind (what a worker does with each claim)."""
        event = parse(kind, payload)
        handlers = self._apply.get(type(event))
        if not handlers:
            raise Unhandled(f"nothing handles outbox event kind {kind!r}")
        for apply in handlers:
            await apply(event)

    async def apply_now(self, event: Event) -> None:
        """The inline part of a just-committed event, if its kind has one. Every consumer's part runs even
        if another's fails (each is owed to the actor's next read); the first failure is raised after."""
        failure: Exception | None = None
        for now in self._now.get(type(event), ()):
            try:
                await now(event)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
