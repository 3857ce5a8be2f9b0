"""Durations as people say them: ``7 hours 30 minutes``."""

from __future__ import annotations


def _unit(count: int, name: str) -> str:
    return f"{count} {name}" if count == 1 else f"{count} {name}s"


def humanize_duration(seconds: int) -> str:
    hours, remainder = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(remainder, 60)
    if hours == 0 and minutes == 0:
        return _unit(secs, "second")
    parts = [_unit(hours, "hour")] if hours else []
    if minutes:
        parts.append(_unit(minutes, "minute"))
    return " ".join(parts)
