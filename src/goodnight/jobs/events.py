"""The domain events of the outbox: one frozen dataclass per kind, and their stored form.

Services publish these (``publish.Events``), handlers receive them (``handlers.Handlers``), and the outbox
stores each one as its kind plus a JSON payload. That payload is written and read here only, and its format
is the one rows already in the outbox have: ``to_payload`` writes the same keys, in the same order, with the
same values, and ``from_payload`` reads every row ever written (ignoring keys it does not know).
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from goodnight.jobs.outbox import EventKind

Payload = Mapping[str, Any]
# How a worker applies a stored event: its kind and payload, exactly as claimed from the outbox.
Apply = Callable[[str, dict[str, Any]], Awaitable[None]]


class UnknownEvent(ValueError):
    """A stored event of a kind this version does not know."""


class Event(ABC):
    __slots__ = ()
    kind: ClassVar[EventKind]

    @abstractmethod
    def to_payload(self) -> dict[str, Any]:
        """The JSON payload stored in the outbox."""

    @classmethod
    @abstractmethod
    def from_payload(cls, payload: Payload) -> Self:
        """The event from a stored payload (``KeyError``, ``ValueError`` when it is malformed)."""


@dataclass(frozen=True, slots=True)
class SleepCompleted(Event):
    """A record was completed (clocked out, or logged whole): it enters its author's followers' feeds."""

    kind: ClassVar[EventKind] = EventKind.SLEEP_COMPLETED
    record_id: uuid.UUID

    def to_payload(self) -> dict[str, Any]:
        return {"record_id": str(self.record_id)}

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        return cls(uuid.UUID(payload["record_id"]))


@dataclass(frozen=True, slots=True)
class DeletedRecord:
    """A deleted record, as far as the feeds need it: which record, whose, and where its entries are."""

    record_id: uuid.UUID
    user_id: uuid.UUID
    clocked_in_at: datetime
    duration: int | None  # None for a record that was still open (in no feed)

    def to_payload(self) -> dict[str, Any]:
        return {
            "record_id": str(self.record_id),
            "user_id": str(self.user_id),
            "clocked_in_at": self.clocked_in_at.isoformat(),
            "duration": self.duration,
        }

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        duration = payload.get("duration")
        return cls(
            uuid.UUID(payload["record_id"]),
            uuid.UUID(payload["user_id"]),
            datetime.fromisoformat(payload["clocked_in_at"]),
            None if duration is None else int(duration),
        )


@dataclass(frozen=True, slots=True)
class RecordDeleted(Event):
    """A sleep record was deleted: it leaves every feed."""

    kind: ClassVar[EventKind] = EventKind.RECORD_DELETED
    record: DeletedRecord

    def to_payload(self) -> dict[str, Any]:
        return self.record.to_payload()

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        return cls(DeletedRecord.from_payload(payload))


@dataclass(frozen=True, slots=True)
class FollowChanged(Event):
    """The follower now follows, or no longer follows, the followed user: the kind says which was asked."""

    follower_id: uuid.UUID
    followed_id: uuid.UUID

    def to_payload(self) -> dict[str, Any]:
        return {"follower_id": str(self.follower_id), "followed_id": str(self.followed_id)}

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        return cls(uuid.UUID(payload["follower_id"]), uuid.UUID(payload["followed_id"]))


@dataclass(frozen=True, slots=True)
class Followed(FollowChanged):
    kind: ClassVar[EventKind] = EventKind.FOLLOWED


@dataclass(frozen=True, slots=True)
class Unfollowed(FollowChanged):
    kind: ClassVar[EventKind] = EventKind.UNFOLLOWED


@dataclass(frozen=True, slots=True)
class NameChanged(Event):
    """The user's display name changed: feed items show it."""

    kind: ClassVar[EventKind] = EventKind.NAME_CHANGED
    user_id: uuid.UUID

    def to_payload(self) -> dict[str, Any]:
        return {"user_id": str(self.user_id)}

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        return cls(uuid.UUID(payload["user_id"]))


def _records(payload: Payload) -> tuple[DeletedRecord, ...]:
    return tuple(DeletedRecord.from_payload(record) for record in payload["records"])


@dataclass(frozen=True, slots=True)
class AccountDeleted(Event):
    """An account was deleted, with the records of it that a feed page can still reach."""

    kind: ClassVar[EventKind] = EventKind.ACCOUNT_DELETED
    user_id: uuid.UUID
    records: tuple[DeletedRecord, ...]

    def to_payload(self) -> dict[str, Any]:
        return {"user_id": str(self.user_id), "records": [record.to_payload() for record in self.records]}

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        return cls(uuid.UUID(payload["user_id"]), _records(payload))


@dataclass(frozen=True, slots=True)
class DeletedAccountFollowers(Event):
    """A batch of a deleted account's former followers (the follow rows are gone, so the event names them),
    whose feeds must stop holding its records."""

    kind: ClassVar[EventKind] = EventKind.DELETED_ACCOUNT_FOLLOWERS
    user_id: uuid.UUID
    records: tuple[DeletedRecord, ...]
    followers: tuple[uuid.UUID, ...]

    def to_payload(self) -> dict[str, Any]:
        return {
            "user_id": str(self.user_id),
            "records": [record.to_payload() for record in self.records],
            "followers": [str(follower) for follower in self.followers],
        }

    @classmethod
    def from_payload(cls, payload: Payload) -> Self:
        followers = tuple(uuid.UUID(follower) for follower in payload["followers"])
        return cls(uuid.UUID(payload["user_id"]), _records(payload), followers)


EVENT_TYPES: dict[str, type[Event]] = {
    event_type.kind.value: event_type
    for event_type in (
        SleepCompleted,
        RecordDeleted,
        Followed,
        Unfollowed,
        NameChanged,
        AccountDeleted,
        DeletedAccountFollowers,
    )
}


def parse(kind: str, payload: Payload) -> Event:
    """The event a stored row holds."""
    event_type = EVENT_TYPES.get(kind)
    if event_type is None:
        raise UnknownEvent(f"unknown outbox event kind {kind!r}")
    return event_type.from_payload(payload)
