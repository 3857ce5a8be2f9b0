"""Users: ``user1`` … ``userN``, one shared password hash, exact follower counters, and who is active."""

from __future__ import annotations

import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import median_low
from typing import Any

from goodnight.seed.graph import BLOCK, Degrees
from goodnight.seed.ids import USERS_BASE_MS, block_rng, uuid7_at

DAY = 86400
LIGHT_FOLLOWINGS = 10
# The users a load test reads as: marked active this recently, so their timelines are built and warm.
SPECIAL_SEEN_SECONDS = 1800

USER_COLUMNS = (
    "id",
    "username",
    "username_key",
    "name",
    "password_hash",
    "followers_count",
    "followings_count",
    "last_active_at",
    "created_at",
    "updated_at",
)


def username(number: int) -> str:
    """User number (0-based) to username: 0 -> ``user1``."""
    return f"user{number + 1}"


@dataclass(frozen=True, slots=True)
class Picks:
    light: int
    median: int
    heavy: int
    celebrity: int

    def as_set(self) -> set[int]:
        return {self.light, self.median, self.heavy, self.celebrity}


class UserPlan:
    """Ids, activity and counters of every user; one small object or number per user."""

    def __init__(self, users: int, seed: int, active_share: float) -> None:
        self.users = users
        self.seed = seed
        self.ids: list[uuid.UUID] = []
        self.active = bytearray(users)
        for block in range((users + BLOCK - 1) // BLOCK):
            rng = block_rng(seed, "users", block)
            for number in range(block * BLOCK, min(users, (block + 1) * BLOCK)):
                self.ids.append(uuid7_at(USERS_BASE_MS + number, rng))
                self.active[number] = rng.random() < active_share

    def pick(self, degrees: Degrees) -> Picks:
        """The users a load test needs, each made active: ≈10 followings, the median, the most followings,
        the most followers."""
        followings, followers = degrees.followings, degrees.followers
        everyone = range(self.users)
        heavy = max(everyone, key=followings.__getitem__)
        celebrity = max(everyone, key=followers.__getitem__)
        taken = {heavy, celebrity}
        light = _closest(followings, LIGHT_FOLLOWINGS, self.active, taken)
        taken.add(light)
        middle = median_low(followings) if self.users else 0
        median = _closest(followings, middle, self.active, taken)
        picks = Picks(light, median, heavy, celebrity)
        for number in picks.as_set():
            self.active[number] = 1
        return picks

    def rows(
        self,
        block: int,
        *,
        degrees: Degrees,
        password_hash: str,
        anchor: datetime,
        days: int,
        active_days: int,
        picks: Picks,
    ) -> Iterator[tuple[Any, ...]]:
        rng = block_rng(self.seed, "user-rows", block)
        special = picks.as_set()
        anchor = anchor.astimezone(UTC).replace(tzinfo=None)  # the columns hold naive UTC
        for number in range(block * BLOCK, min(self.users, (block + 1) * BLOCK)):
            if number in special:
                seen = SPECIAL_SEEN_SECONDS
            elif self.active[number]:
                seen = rng.randrange(int(0.85 * active_days * DAY))
            else:
                seen = (active_days + 1) * DAY + rng.randrange(60 * DAY)
            joined = max(seen, (days + 1) * DAY) + rng.randrange(365 * DAY)
            created_at = anchor - timedelta(seconds=joined)
            name = username(number)
            yield (
                self.ids[number],
                name,
                name,
                f"User {number + 1}",
                password_hash,
                degrees.followers[number],
                degrees.followings[number],
                anchor - timedelta(seconds=seen),
                created_at,
                created_at,
            )


def _closest(values: array[int], wanted: int, active: bytearray, taken: set[int]) -> int:
    """The first active user (else any user) whose value is closest to ``wanted``, not already taken."""
    best, best_distance = -1, None
    for prefer_active in (True, False):
        for number, value in enumerate(values):
            if number in taken or (prefer_active and not active[number]):
                continue
            distance = abs(value - wanted)
            if best_distance is None or distance < best_distance:
                best, best_distance = number, distance
                if distance == 0:
                    return best
        if best >= 0:
            return best
    return next((number for number in range(len(values)) if number not in taken), 0)
