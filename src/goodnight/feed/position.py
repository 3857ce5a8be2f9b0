"""A record's position in the feed, ``(duration, id)``, as 20 bytes whose byte order is the feed's order.

The duration (4 bytes, big-endian), then the record's UUID (16 bytes): comparing two positions as bytes
compares ``(duration, id)``. The next page's cursor is built from the last position shown, and the Redis
timelines keep positions as sorted-set members of equal score, so a cursor is a ZRANGE BYLEX bound.
"""

from __future__ import annotations

import struct
import uuid

_DURATION = struct.Struct(">I")
# Where the record's id starts in a position.
ID_OFFSET = _DURATION.size
POSITION_SIZE = ID_OFFSET + 16


def encode_position(duration: int, record_id: uuid.UUID) -> bytes:
    return _DURATION.pack(duration) + record_id.bytes


def parse_position(raw: bytes) -> tuple[int, uuid.UUID]:
    """``(duration, record id)`` of a position."""
    if len(raw) != POSITION_SIZE:
        raise ValueError(f"not a feed position: {raw!r}")
    return _DURATION.unpack_from(raw)[0], uuid.UUID(bytes=raw[ID_OFFSET:])
