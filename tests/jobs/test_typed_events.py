"""The outbox's typed events: each writes exactly the payload rows already in the outbox hold (same keys,
same order, same values: the stored JSON is byte for byte what it was), and reads every such row back."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from goodnight.jobs.events import (
    AccountDeleted,
    DeletedAccountFollowers,
    DeletedRecord,
    Event,
    Followed,
    NameChanged,
    RecordDeleted,
    SleepCompleted,
    Unfollowed,
    UnknownEvent,
    parse,
)

RECORD, AUTHOR, READER, OTHER = (uuid.UUID(int=n) for n in (1, 2, 3, 4))
CLOCKED_IN = datetime(2026, 11, 28, 22, 15, 30, 123456, tzinfo=UTC)
DELETED = DeletedRecord(RECORD, AUTHOR, CLOCKED_IN, 27_000)
OPEN = DeletedRecord(OTHER, AUTHOR, CLOCKED_IN, None)


def stored_record(record: DeletedRecord) -> dict[str, Any]:
    """A deleted record as the services wrote it into payloads before events were typed."""
    return {
        "record_id": str(record.record_id),
        "user_id": str(record.user_id),
        "clocked_in_at": record.clocked_in_at.isoformat(),
        "duration": record.duration,
    }


account = {"user_id": str(AUTHOR), "records": [stored_record(DELETED), stored_record(OPEN)]}
CASES: list[tuple[Event, str, dict[str, Any]]] = [
    (SleepCompleted(RECORD), "sleep_completed", {"record_id": str(RECORD)}),
    (RecordDeleted(DELETED), "record_deleted", stored_record(DELETED)),
    (RecordDeleted(OPEN), "record_deleted", stored_record(OPEN)),
    (Followed(READER, AUTHOR), "followed", {"follower_id": str(READER), "followed_id": str(AUTHOR)}),
    (Unfollowed(READER, AUTHOR), "unfollowed", {"follower_id": str(READER), "followed_id": str(AUTHOR)}),
    (NameChanged(AUTHOR), "name_changed", {"user_id": str(AUTHOR)}),
    (AccountDeleted(AUTHOR, (DELETED, OPEN)), "account_deleted", account),
    (
        DeletedAccountFollowers(AUTHOR, (DELETED, OPEN), (READER, OTHER)),
        "deleted_account_followers",
        {**account, "followers": [str(READER), str(OTHER)]},
    ),
]


@pytest.mark.parametrize(("event", "kind", "stored"), CASES)
def test_events_write_and_read_the_stored_payloads(event: Event, kind: str, stored: dict[str, Any]) -> None:
    assert event.kind == kind
    assert json.dumps(event.to_payload()) == json.dumps(stored)
    assert parse(kind, stored) == event
    assert parse(kind, {**stored, "added_later": 1}) == event  # a newer writer's extra key is ignored


def test_an_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(UnknownEvent, match=r"^unknown outbox event kind 'mystery'$"):
        parse("mystery", {})


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("sleep_completed", {}),
        ("sleep_completed", {"record_id": "not-a-uuid"}),
        ("followed", {"follower_id": str(READER)}),
        ("record_deleted", {"record_id": str(RECORD), "user_id": str(AUTHOR), "clocked_in_at": "yesterday"}),
        ("account_deleted", {"user_id": str(AUTHOR)}),
    ],
)
def test_malformed_payloads_are_refused(kind: str, payload: dict[str, Any]) -> None:
    with pytest.raises((KeyError, ValueError)):
        parse(kind, payload)
