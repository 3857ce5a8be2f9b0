"""Times as the API writes them, relative to now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def iso(moment: datetime) -> str:
    """``2026-11-28T22:30:00.000Z``: UTC, milliseconds, a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)
