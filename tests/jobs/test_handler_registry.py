"""The registry the composition root fills: a stored event goes to every handler of its kind, typed; the
inline part of a write runs only where one was registered; and nothing is published while nothing handles."""

from __future__ import annotations

import uuid

import pytest

from goodnight.jobs.events import Event, NameChanged, SleepCompleted, UnknownEvent
from goodnight.jobs.handlers import Handlers, Unhandled

USER = uuid.UUID(int=7)


async def test_a_stored_event_reaches_every_handler_of_its_kind_typed() -> None:
    handlers = Handlers()
    assert not handlers.consumes
    seen: list[tuple[str, Event]] = []

    async def first(event: NameChanged) -> None:
        seen.append(("first", event))

    async def second(event: NameChanged) -> None:
        seen.append(("second", event))

    handlers.on(NameChanged, first)
    handlers.on(NameChanged, second)
    assert handlers.consumes
    await handlers.dispatch("name_changed", {"user_id": str(USER)})
    assert seen == [("first", NameChanged(USER)), ("second", NameChanged(USER))]


async def test_kinds_nobody_handles_and_unknown_kinds_fail_so_the_outbox_keeps_them() -> None:
    handlers = Handlers()

    async def ignore(event: NameChanged) -> None:
        raise AssertionError("not this kind")

    handlers.on(NameChanged, ignore)
    with pytest.raises(Unhandled, match="sleep_completed"):
        await handlers.dispatch("sleep_completed", {"record_id": str(USER)})
    with pytest.raises(UnknownEvent):
        await handlers.dispatch("mystery", {})


async def test_only_kinds_with_an_inline_handler_are_applied_inline() -> None:
    handlers = Handlers()
    applied: list[str] = []

    async def in_worker(event: Event) -> None:
        applied.append("worker")

    async def inline(event: Event) -> None:
        applied.append("inline")

    handlers.on(NameChanged, in_worker, now=inline)
    handlers.on(SleepCompleted, in_worker)
    await handlers.apply_now(NameChanged(USER))
    await handlers.apply_now(SleepCompleted(USER))
    assert applied == ["inline"]


def test_outage_errors_add_up_across_consumers() -> None:
    handlers = Handlers()
    assert handlers.outages == ()
    handlers.on_outage(ConnectionError)
    handlers.on_outage(TimeoutError, OSError)
    assert handlers.outages == (ConnectionError, TimeoutError, OSError)


async def test_every_inline_part_runs_though_one_fails_and_the_failure_is_raised() -> None:
    handlers = Handlers()
    applied: list[str] = []

    async def worker(event: Event) -> None:
        applied.append("worker")

    async def failing(event: Event) -> None:
        raise ConnectionError("redis is away")

    async def bump(event: Event) -> None:
        applied.append("bump")

    handlers.on(NameChanged, worker, now=failing)
    handlers.on(NameChanged, worker, now=bump)
    with pytest.raises(ConnectionError, match="redis is away"):
        await handlers.apply_now(NameChanged(USER))
    assert applied == ["bump"]
