"""Sleep records: one per user per night over the last ``days`` nights, plus a few people asleep right now.

Every user has a chronotype (a usual bed time between about 22:00 and 00:45 UTC and a usual length of sleep
around 7.5 h); each night varies around it, bed times clipped to 21:00-01:30 and lengths to 5-10 h. About one
user in fifty is "asleep now": their night still going on at the anchor time is an open record, or, when
their last night is over, they went to bed again shortly before the anchor. Everyone else's night still
going on at the anchor is not recorded yet, so open records stay few whatever the hour.

Records are generated night by night, and each record's UUIDv7 carries its clock-in time, as the API's
would. The anchor is "now" rounded down to the hour, so reruns within the hour (or with the same ``--now``)
give identical records.
"""

from __future__ import annotations

import uuid
from array import array
from collections.abc import Collection, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

from goodnight.seed.graph import BLOCK
from goodnight.seed.ids import block_rng, uuid7_at

HOUR = 3600
BED_EARLIEST = 21 * HOUR  # seconds after the midnight that starts the evening's date
BED_LATEST = 25 * HOUR + 30 * 60
SLEEP_SHORTEST = 5 * HOUR
SLEEP_LONGEST = 10 * HOUR
ASLEEP_NOW_RATE = 0.02
OPEN = 1

RECORD_COLUMNS = (
    "id",
    "user_id",
    "clocked_in_at",
    "clocked_out_at",
    "duration_s",
    "open_flag",
    "created_at",
    "updated_at",
)
_EPOCH = datetime(1970, 1, 1)  # naive UTC, what the database columns hold


def naive(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def _clip(value: float, low: int, high: int) -> int:
    return int(min(high, max(low, value)))


class RecordPlan:
    def __init__(
        self, ids: list[uuid.UUID], days: int, anchor: datetime, seed: int, awake: Collection[int] = ()
    ) -> None:
        """``awake``: users who must not be asleep now (the load test clocks them in and out)."""
        self.ids = ids
        self.users = len(ids)
        self.days = days
        self.seed = seed
        self.anchor = int(anchor.timestamp())
        self.today = anchor.astimezone(UTC).date()
        self.bed = array("i")
        self.length = array("i")
        self.asleep = bytearray(self.users)
        for block in range(self.blocks):
            rng = block_rng(seed, "chronotypes", block)
            for number in range(*self.bounds(block)):
                self.asleep[number] = rng.random() < ASLEEP_NOW_RATE and number not in awake
                self.bed.append(_clip(rng.gauss(23.25 * HOUR, 0.75 * HOUR), 22 * HOUR, 24 * HOUR + 45 * 60))
                self.length.append(_clip(rng.gauss(7.5 * HOUR, 0.6 * HOUR), 6 * HOUR, 9 * HOUR))
        # When each user's latest record ended (0 while it is open), to place the "asleep now" records.
        self.last_end = array("q", bytes(8 * self.users))

    @property
    def blocks(self) -> int:
        return (self.users + BLOCK - 1) // BLOCK

    def bounds(self, block: int) -> tuple[int, int]:
        return block * BLOCK, min(self.users, (block + 1) * BLOCK)

    @property
    def expected(self) -> int:
        return self.users * self.days

    def night(self, nights_ago: int, block: int) -> Iterator[tuple[Any, ...]]:
        """The records of one block of users for the night starting ``nights_ago`` evenings before today."""
        rng = block_rng(self.seed, f"night-{nights_ago}", block)
        gauss, anchor = rng.gauss, self.anchor
        evening = int(
            datetime.combine(self.today - timedelta(days=nights_ago), time(), tzinfo=UTC).timestamp()
        )
        for number in range(*self.bounds(block)):
            bed = self.bed[number] + gauss(0, 0.5 * HOUR)
            start = evening + int(BED_EARLIEST if bed < BED_EARLIEST else min(bed, BED_LATEST))
            length = self.length[number] + gauss(0, 0.75 * HOUR)
            end = start + int(SLEEP_SHORTEST if length < SLEEP_SHORTEST else min(length, SLEEP_LONGEST))
            if end <= anchor:
                self.last_end[number] = end
                yield self._row(number, start, end, rng)
            elif self.asleep[number] and start <= anchor - 60:
                self.last_end[number] = 0
                yield self._row(number, start, None, rng)

    def asleep_now(self, block: int) -> Iterator[tuple[Any, ...]]:
        """The users asleep now whose last night is over went to bed again shortly before the anchor."""
        rng = block_rng(self.seed, "asleep-now", block)
        for number in range(*self.bounds(block)):
            if not self.asleep[number]:
                continue
            last_end = self.last_end[number]
            awake_for = self.anchor - last_end
            if last_end == 0 or awake_for < 30 * 60:
                continue
            start = self.anchor - 60 - rng.randrange(min(3 * HOUR, awake_for - 20 * 60))
            self.last_end[number] = 0
            yield self._row(number, start, None, rng)

    def _row(self, number: int, start: int, end: int | None, rng: Any) -> tuple[Any, ...]:
        record_id = uuid7_at(start * 1000 + rng.getrandbits(10) % 1000, rng)
        clocked_in_at = naive(start)
        if end is None:
            return (
                record_id,
                self.ids[number],
                clocked_in_at,
                None,
                None,
                OPEN,
                clocked_in_at,
                clocked_in_at,
            )
        clocked_out_at = naive(end)
        return (
            record_id,
            self.ids[number],
            clocked_in_at,
            clocked_out_at,
            end - start,
            None,
            clocked_in_at,
            clocked_out_at,
        )
