"""Time helpers. Every timestamp inside Goodnight is an aware UTC datetime with millisecond precision."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return to_millis(datetime.now(UTC))


def to_utc(value: datetime) -> datetime:
    """Normalise to aware UTC; a naive value is taken to already be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_millis(value: datetime) -> datetime:
    """Drop sub-millisecond precision, so what a client reads back is exactly what is stored."""
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def format_utc(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``: ``2026-11-28T22:30:00.000Z``."""
    value = to_utc(value)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"
