"""``goodnight outbox dead`` and ``goodnight outbox retry-dead --id``, on SQLite, PostgreSQL and MariaDB: the
operator sees which events were parked, why and when, and can send one of them back to the workers."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest_asyncio

from goodnight.db import Database
from goodnight.deps import Services
from goodnight.jobs.worker import Worker
from goodnight.kit.clock import utcnow
from tests.support.cli import invoke
from tests.support.databases import TestDatabase, settings_for, truncate
from tests.support.outbox import insert_events, outbox_row
from tests.support.times import iso

EVENT_KEYS = {"id", "kind", "payload", "attempts", "first_attempt_at", "last_attempt_at", "last_error"}


@pytest_asyncio.fixture
async def db(services: Services) -> Database:
    await truncate(services.database.engine)
    return services.database


def event(**columns: Any) -> dict[str, Any]:
    """A well-formed event about a record that does not exist (a no-op for the real handlers)."""
    return {"kind": "sleep_completed", "payload": {"record_id": str(uuid.uuid4())}, **columns}


async def park_one(db: Database, database: TestDatabase) -> int:
    """An event that really fails and is parked by a worker (one attempt allowed); the outbox must hold
    nothing else ready."""
    [event_id] = await insert_events(db, [event()])

    async def broken(kind: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("the cache is on fire")

    assert await Worker(db, broken, settings_for(database.url, outbox_max_attempts=1)).drain() == 1
    assert (await outbox_row(db, event_id)).dead_at is not None
    return event_id


async def test_dead_lists_parked_events_newest_first_with_when_and_why(
    db: Database, database: TestDatabase
) -> None:
    parked = await park_one(db, database)
    now = utcnow()
    older, oldest, pending = await insert_events(
        db,
        [
            event(
                created_at=now - timedelta(hours=2),
                dead_at=now - timedelta(hours=1),
                attempts=10,
                last_error="ValueError: bad payload",
            ),
            event(
                kind="followed",
                created_at=now - timedelta(days=1),
                dead_at=now - timedelta(hours=20),
                attempts=10,
                last_error=None,
            ),
            event(),  # waiting, not dead: never listed
        ],
    )
    row = await outbox_row(db, parked)
    assert row.dead_at is not None

    result = await invoke(["outbox", "dead", "--json"], database.url)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["total"] == 3
    assert [listed["id"] for listed in document["events"]] == [parked, older, oldest]
    assert all(listed.keys() == EVENT_KEYS for listed in document["events"])
    assert document["events"][0] == {
        "id": parked,
        "kind": "sleep_completed",
        "payload": row.payload,
        "attempts": 1,
        "first_attempt_at": iso(row.created_at),
        "last_attempt_at": iso(row.dead_at),
        "last_error": "RuntimeError: the cache is on fire",
    }
    assert document["events"][2]["last_error"] is None
    assert pending not in {listed["id"] for listed in document["events"]}

    limited = await invoke(["outbox", "dead", "--limit", "1", "--json"], database.url)
    assert limited.exit_code == 0, limited.output
    assert json.loads(limited.stdout)["total"] == 3
    assert [listed["id"] for listed in json.loads(limited.stdout)["events"]] == [parked]

    for impossible in ("0", "100001", str(2**64)):
        refused = await invoke(["outbox", "dead", "--limit", impossible], database.url)
        assert refused.exit_code == 2, refused.output
        assert "Invalid value for '--limit'" in refused.output

    table = await invoke(["outbox", "dead", "--limit", "2"], database.url)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    listed = [
        (parked, 1, row.dead_at, "RuntimeError: the cache is on fire"),
        (older, 10, None, "ValueError: bad payload"),
    ]
    for event_id, attempts, parked_at, error in listed:
        [at] = [index for index, line in enumerate(lines) if _row_of(line, event_id)]
        cells = lines[at].split()
        assert (cells[1], cells[-1]) == (str(attempts), "sleep_completed")
        if parked_at is not None:
            assert " ".join(cells[4:6]) == f"{parked_at:%Y-%m-%d %H:%M:%S}"
        assert lines[at + 1].strip() == error  # the error goes under the kind
    assert not [line for line in lines if _row_of(line, oldest)]  # beyond --limit 2
    assert "2 of 3 dead event(s)" in table.stdout


def _row_of(line: str, event_id: int) -> bool:
    """The table's first line for an event: id, attempts, two times (date and time each), kind."""
    cells = line.split()
    return len(cells) == 7 and cells[0] == str(event_id)


async def test_dead_with_nothing_parked(db: Database, database: TestDatabase) -> None:
    await insert_events(db, [event()])
    as_json, table = (
        await invoke(["outbox", "dead", "--json"], database.url),
        await invoke(["outbox", "dead"], database.url),
    )
    assert (as_json.exit_code, table.exit_code) == (0, 0), (as_json.output, table.output)
    assert json.loads(as_json.stdout) == {"total": 0, "events": []}
    assert table.stdout.strip() == "no dead events"


async def test_retry_dead_by_id_requeues_that_event_only(db: Database, database: TestDatabase) -> None:
    now = utcnow()
    chosen, other, pending = await insert_events(
        db,
        [
            event(dead_at=now, attempts=10, last_error="RuntimeError: boom"),
            event(dead_at=now, attempts=10, last_error="RuntimeError: boom"),
            event(attempts=2, available_at=now + timedelta(minutes=5)),
        ],
    )

    result = await invoke(["outbox", "retry-dead", "--id", str(chosen)], database.url)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"event {chosen} queued again"
    revived = await outbox_row(db, chosen)
    assert (revived.dead_at, revived.attempts, revived.claimed_until) == (None, 0, None)
    assert revived.available_at <= utcnow()
    still_dead = await outbox_row(db, other)
    assert (still_dead.dead_at is not None, still_dead.attempts) == (True, 10)

    # Neither a live event (the one just revived included) nor an unknown id is touched.
    for event_id in (chosen, pending):
        refused = await invoke(["outbox", "retry-dead", "--id", str(event_id)], database.url)
        assert refused.exit_code == 1, refused.output
        assert refused.stderr == (
            f"outbox event {event_id} is not dead (it is pending or in flight); "
            "only dead events are retried\n"
        )
        assert refused.stdout == ""
    untouched = await outbox_row(db, pending)
    assert (untouched.attempts, untouched.dead_at) == (2, None)

    unknown = await invoke(["outbox", "retry-dead", "--id", str(pending + 1000)], database.url)
    assert unknown.exit_code == 1, unknown.output
    assert unknown.stderr == f"no outbox event has id {pending + 1000}\n"
    assert (await outbox_row(db, other)).dead_at is not None

    for impossible in ("0", "-3", str(2**63), "four"):
        refused = await invoke(["outbox", "retry-dead", "--id", impossible], database.url)
        assert refused.exit_code == 2, refused.output  # a usage error, before the database is asked
        assert "Invalid value for '--id'" in refused.output

    # Without --id, every dead event, as before.
    everything = await invoke(["outbox", "retry-dead"], database.url)
    assert everything.exit_code == 0, everything.output
    assert everything.stdout.strip() == "1 dead event(s) queued again"
    assert (await outbox_row(db, other)).dead_at is None
