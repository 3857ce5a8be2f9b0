"""A user's sleep over the last few days, summed up from their records.

Clock times are averaged on the clock face, not the number line: the mean of 23:00 and 01:00 is midnight,
not noon. Each time is a unit vector at its angle around the day; the mean is the direction of their sum.
The arithmetic happens here, not in SQL, so it is the same to the last bit on every database (SQLite need
not even have trigonometric functions). The rows are one user's completed records of 30 days at most, which
cannot overlap: a few dozen for anyone who sleeps once or twice a day.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from goodnight.kit.clock import to_utc
from goodnight.models import SleepRecord
from goodnight.sleep.schemas import SleepRecordOut, SleepSummary

MINUTES_PER_DAY = 24 * 60
_SECONDS_PER_DAY = 86400
# Below this length (per time averaged) the vectors' sum points nowhere in particular: times spread evenly
# round the clock, such as 10:00 and 22:00, have no mean.
_NO_DIRECTION = 1e-9


def _angle(moment: datetime) -> float:
    utc = to_utc(moment)
    seconds = utc.hour * 3600 + utc.minute * 60 + utc.second + utc.microsecond / 1_000_000
    return 2 * math.pi * seconds / _SECONDS_PER_DAY


def circular_mean_minute(moments: Sequence[datetime]) -> int | None:
    """The mean time of day of ``moments`` in whole minutes after 00:00 UTC, or None when there is none."""
    angles = [_angle(moment) for moment in moments]
    x = math.fsum(math.cos(angle) for angle in angles)
    y = math.fsum(math.sin(angle) for angle in angles)
    if math.hypot(x, y) < _NO_DIRECTION * max(len(angles), 1):
        return None
    minutes = math.atan2(y, x) / (2 * math.pi) * MINUTES_PER_DAY
    return round(minutes) % MINUTES_PER_DAY


def _rounded_mean(total: int, count: int) -> int:
    """``total / count`` rounded half up, in integers (exact however large the total)."""
    return (2 * total + count) // (2 * count)


def summarize(records: Sequence[SleepRecord], days: int) -> SleepSummary:
    """The summary of completed ``records`` (the caller picked the window)."""
    if not records:
        return SleepSummary(
            days=days,
            records=0,
            total_seconds=0,
            average_seconds=None,
            longest=None,
            shortest=None,
            average_clocked_in_at_minute_utc=None,
            average_clocked_out_at_minute_utc=None,
        )
    # The feed's order, (duration, id): ties between equally long nights are settled the same way.
    ordered = sorted(records, key=lambda record: (record.duration_s or 0, record.id))
    total = sum(record.duration_s or 0 for record in records)
    return SleepSummary(
        days=days,
        records=len(records),
        total_seconds=total,
        average_seconds=_rounded_mean(total, len(records)),
        longest=SleepRecordOut.model_validate(ordered[-1]),
        shortest=SleepRecordOut.model_validate(ordered[0]),
        average_clocked_in_at_minute_utc=circular_mean_minute([r.clocked_in_at for r in records]),
        average_clocked_out_at_minute_utc=circular_mean_minute(
            [r.clocked_out_at for r in records if r.clocked_out_at is not None]
        ),
    )
