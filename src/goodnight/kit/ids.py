"""UUIDv7 identifiers: time-ordered, so new rows land at the right edge of every index."""

from __future__ import annotations

import uuid

import uuid_utils


def new_id() -> uuid.UUID:
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def parse_id(value: str) -> uuid.UUID | None:
    """Parse a client-supplied id; None when it is not a UUID (callers answer 404, not 422)."""
    if len(value) > 64:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
