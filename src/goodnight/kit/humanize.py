"""Durations as the original app rendered them (Rails ``ActiveSupport::Duration#inspect``).

The non-zero parts among weeks, days, hours, minutes and seconds, joined the way ``Array#to_sentence`` joins
words: ``1 hour``, ``7 hours and 30 minutes``, ``7 hours, 12 minutes, and 34 seconds``; nothing at all is
``0 seconds``.
"""

from __future__ import annotations

_UNITS = (("week", 7 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def _count(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def _sentence(parts: list[str]) -> str:
    """``a``, ``a and b``, ``a, b, and c`` (the serial comma, as ``to_sentence`` writes it)."""
    if len(parts) <= 2:
        return " and ".join(parts)
    return f"{', '.join(parts[:-1])}, and {parts[-1]}"


def humanize_duration(seconds: int) -> str:
    remaining = max(seconds, 0)
    parts: list[str] = []
    for unit, size in _UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(_count(count, unit))
    return _sentence(parts) if parts else "0 seconds"
