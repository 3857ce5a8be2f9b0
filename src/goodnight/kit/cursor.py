"""Opaque keyset-pagination cursors.

A cursor is the sort key of the last row a client saw, as URL-safe base64 of a JSON array. Clients must treat
it as opaque; the server validates its shape strictly, because it arrives from the outside world.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from goodnight.errors import ValidationFailed

MAX_CURSOR_LENGTH = 512

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Timestamps travel as integer microseconds since the epoch; anything past this is no time we ever wrote.
_LATEST_MICROS = (datetime(9000, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)

CursorPart = int | str | uuid.UUID | datetime


class MalformedCursor(ValidationFailed):
    default_message = "The cursor is malformed; pass back the next_cursor value exactly as received."

    def __init__(self) -> None:
        super().__init__(details={"field": "cursor"})


def encode_cursor(*parts: CursorPart) -> str:
    raw = orjson.dumps([_plain(part) for part in parts])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _plain(part: CursorPart) -> int | str:
    if isinstance(part, uuid.UUID):
        return part.hex
    if isinstance(part, datetime):
        return (part - _EPOCH) // timedelta(microseconds=1)
    return part


def decode_cursor(token: str, shape: tuple[type[CursorPart], ...]) -> tuple[Any, ...]:
    """Decode ``token`` into values of the given types, or raise a 422 ``validation_error``."""
    try:
        if len(token) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        parts = orjson.loads(raw)
        if not isinstance(parts, list) or len(parts) != len(shape):
            raise ValueError("wrong shape")
        return tuple(_coerce(part, kind) for part, kind in zip(parts, shape, strict=True))
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise MalformedCursor() from exc


def _coerce(part: object, kind: type[CursorPart]) -> CursorPart:
    if kind is uuid.UUID:
        if not isinstance(part, str) or len(part) != 32:
            raise ValueError("bad id")
        return uuid.UUID(hex=part)
    if kind is str:
        if not isinstance(part, str):
            raise ValueError("bad text")
        return part
    # bool is an int subclass; a cursor never holds one. Bounds keep values inside every database's BIGINT.
    if not isinstance(part, int) or isinstance(part, bool) or not -(2**62) < part < 2**62:
        raise ValueError("bad integer")
    if kind is datetime:
        if not 0 <= part < _LATEST_MICROS:
            raise ValueError("time out of range")
        return _EPOCH + timedelta(microseconds=part)
    return part
