"""The follow graph: who follows whom, generated deterministically one block of followers at a time.

- **Followings (out-degree)** follow a log-normal distribution calibrated so the mean is ``--avg-followings``,
  capped at ``MAX_FOLLOWINGS`` (or a fifth of the users on small datasets); the user with the most followings
  is raised to the cap, so there is always one "heavy" reader.
- **Followers (in-degree)** follow a Zipf-Mandelbrot law: the user of popularity rank ``r`` is picked with
  weight ``1 / (r + ZIPF_OFFSET)``. With 20M edges over 1M users the top user ends up with ~170K followers,
  the scale model's "celebrity" (DESIGN §6); the ranks are shuffled over the user numbers.
- **Celebrities**: the ``C`` most popular ranks are also each given a fixed block of ``threshold + 2``
  followers, so at least ``C`` users are above the celebrity threshold whatever the dataset's size.
- A few follows were undone (``active`` false), as in a real service; they count nowhere.

Nothing holds the edges: a block of followers is regenerated from its own seeded generator whenever it is
needed (once to count degrees, once to load), so memory stays at a few arrays of one number per user.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

from goodnight.seed.ids import block_rng

BLOCK = 1024  # followers per generator block
MAX_FOLLOWINGS = 5000
ZIPF_OFFSET = 10.0
FOLLOWINGS_SIGMA = 1.1
INACTIVE_RATE = 0.02  # share of users with one undone follow
_ZIPF_ROUNDS = 8  # rounds of Zipf draws before falling back to uniform picks (tiny, saturated graphs)


class GraphError(ValueError):
    """The requested graph cannot exist (e.g. more followers required than there are users)."""


@dataclass(frozen=True, slots=True)
class FollowerEdges:
    follower: int  # user number, 0-based
    followees: list[int]  # active follows, ascending
    undone: int  # one inactive follow, or -1


@dataclass(frozen=True, slots=True)
class _Forced:
    start: int
    length: int
    celebrity: int


class FollowGraph:
    def __init__(
        self, users: int, avg_followings: float, celebrities: int, threshold: int, seed: int
    ) -> None:
        self.cap = self.check(users, avg_followings, celebrities, threshold)
        self.users = users
        self.seed = seed
        self.threshold = threshold
        rng = block_rng(seed, "popularity", 0)
        # rank -> user number: the most followed user is self.by_rank[0].
        self.by_rank = array("i", range(users))
        rng.shuffle(self.by_rank)
        self.celebrities = list(self.by_rank[:celebrities])
        self._cum_weights = list(accumulate(1.0 / (rank + ZIPF_OFFSET) for rank in range(users)))
        self._forced = [
            _Forced((index * users) // celebrities + rng.randrange(users), threshold + 2, user)
            for index, user in enumerate(self.celebrities)
        ]
        self.targets = self._followings_targets(avg_followings)

    @staticmethod
    def check(users: int, avg_followings: float, celebrities: int, threshold: int) -> int:
        """Raise GraphError unless such a graph can exist; returns the cap on followings."""
        if users < 1:
            raise GraphError("--users must be at least 1")
        if celebrities < 0 or celebrities > users:
            raise GraphError("--celebrities must be between 0 and --users")
        if avg_followings < 0:
            raise GraphError("--avg-followings cannot be negative")
        cap = min(MAX_FOLLOWINGS, users - 1, max(users // 5, math.ceil(4 * avg_followings)))
        if avg_followings > cap / 2:
            raise GraphError(
                f"--avg-followings {avg_followings:g} is too high for {users} users (at most {cap / 2:g})"
            )
        # A celebrity needs threshold + 1 followers other than itself: a block of threshold + 2 users.
        if celebrities and threshold + 2 > users:
            raise GraphError(
                f"{celebrities} celebrities need more than {threshold} followers each "
                f"(GOODNIGHT_CELEBRITY_THRESHOLD), but there are only {users} users: "
                "lower the threshold or add users"
            )
        return cap

    def _followings_targets(self, mean: float) -> array[int]:
        z = array("d")
        for block in range(self.blocks):
            rng = block_rng(self.seed, "followings", block)
            lo, hi = self.bounds(block)
            z.extend(rng.gauss(0.0, 1.0) for _ in range(lo, hi))
        if mean <= 0 or self.cap <= 0:
            return array("i", bytes(4 * self.users))
        sample = z[: min(len(z), 20_000)]

        def average(mu: float) -> float:
            return sum(self._clip(mu, value) for value in sample) / len(sample)

        low, high = math.log(mean) - 10, math.log(mean) + 10
        for _ in range(32):
            middle = (low + high) / 2
            if average(middle) < mean:
                low = middle
            else:
                high = middle
        mu = (low + high) / 2
        targets = array("i", (self._clip(mu, value) for value in z))
        heavy = max(range(self.users), key=targets.__getitem__)
        targets[heavy] = self.cap
        return targets

    def _clip(self, mu: float, z: float) -> int:
        return min(self.cap, max(0, round(math.exp(min(mu + FOLLOWINGS_SIGMA * z, 30.0)))))

    @property
    def blocks(self) -> int:
        return (self.users + BLOCK - 1) // BLOCK

    def bounds(self, block: int) -> tuple[int, int]:
        return block * BLOCK, min(self.users, (block + 1) * BLOCK)

    def _forced_for(self, follower: int) -> list[int]:
        return [
            forced.celebrity
            for forced in self._forced
            if (follower - forced.start) % self.users < forced.length and forced.celebrity != follower
        ]

    def block(self, block: int) -> Iterator[FollowerEdges]:
        """The follows of one block of followers, always the same for the same seed."""
        rng = block_rng(self.seed, "follows", block)
        users, by_rank, weights = self.users, self.by_rank, self._cum_weights
        total, last = weights[-1], users - 1
        random, randrange = rng.random, rng.randrange
        lo, hi = self.bounds(block)
        for follower in range(lo, hi):
            target = self.targets[follower]
            chosen = set(self._forced_for(follower)) if self._forced else set()
            rounds = 0
            while len(chosen) < target:
                missing = target - len(chosen)
                if rounds < _ZIPF_ROUNDS:
                    for _ in range(missing):
                        followee = by_rank[bisect(weights, random() * total, 0, last)]
                        if followee != follower:
                            chosen.add(followee)
                else:
                    followee = randrange(users)
                    if followee != follower:
                        chosen.add(followee)
                rounds += 1
            undone = -1
            if random() < INACTIVE_RATE and len(chosen) < users - 1:
                while undone < 0 or undone == follower or undone in chosen:
                    undone = randrange(users)
            yield FollowerEdges(follower, sorted(chosen), undone)


@dataclass(frozen=True, slots=True)
class Degrees:
    followings: array[int]
    followers: array[int]
    follows: int  # active follows
    undone: int  # inactive follow rows


def count_block(
    graph: FollowGraph, block: int, followings: array[int], followers: array[int]
) -> tuple[int, int]:
    """Add one block's edges to the degree arrays; returns (active follows, inactive rows) in it."""
    active = undone = 0
    for edges in graph.block(block):
        followings[edges.follower] = len(edges.followees)
        active += len(edges.followees)
        for followee in edges.followees:
            followers[followee] += 1
        if edges.undone >= 0:
            undone += 1
    return active, undone


def empty_counts(users: int) -> array[int]:
    return array("i", bytes(4 * users))
