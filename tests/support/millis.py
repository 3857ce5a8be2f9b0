"""Time as integer milliseconds since the epoch: what the property tests generate and model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WINDOW = 7 * DAY
# No generated clock-in lies within this distance of the 7-day boundary; an example must finish inside it.
MARGIN = 2 * MINUTE

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    return (datetime.now(UTC) - _EPOCH) // timedelta(milliseconds=1)


def iso(ms: int) -> str:
    """The contract's time format: ``2026-11-28T22:30:00.000Z``."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> int:
    assert text.endswith("Z"), text
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(milliseconds=1)
