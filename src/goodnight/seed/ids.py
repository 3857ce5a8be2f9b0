"""Deterministic UUIDv7 identifiers for generated rows.

``uuid_utils.uuid7()`` reads the clock and the OS's random source, so two runs would never produce the same
ids. Here the 48-bit millisecond timestamp is supplied by the caller and the 74 random bits come from the
seeded generator: valid version-7, variant-RFC UUIDs, ordered by the timestamp, identical on every rerun.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

# Users' ids count milliseconds from here, one per user, so user ids sort in user-number order.
USERS_BASE_MS = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
_RAND_B_BITS = 62
_RAND_B_MASK = (1 << _RAND_B_BITS) - 1
_TIMESTAMP_MASK = (1 << 48) - 1
_VERSION_AND_VARIANT = (0x7 << 76) | (0b10 << 62)


def uuid7_at(millis: int, rng: random.Random) -> uuid.UUID:
    """A UUIDv7 for the instant ``millis`` (ms since the epoch) with random bits drawn from ``rng``."""
    rand = rng.getrandbits(74)
    value = (
        ((millis & _TIMESTAMP_MASK) << 80)
        | _VERSION_AND_VARIANT
        | ((rand >> _RAND_B_BITS) << 64)
        | (rand & _RAND_B_MASK)
    )
    return uuid.UUID(int=value)


def block_rng(seed: int, purpose: str, block: int) -> random.Random:
    """An independent generator for one block of one phase: the output of a block never depends on how
    much another block drew, so every phase can be regenerated (or resumed) block by block."""
    return random.Random(f"goodnight-seed:{seed}:{purpose}:{block}")  # noqa: S311  (test data, not secrets)
