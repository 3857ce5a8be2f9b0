"""The replicas, their sampled health, and the choice of one for a read.

Every ``SAMPLE_SECONDS`` one task per process asks the primary where its writes stand and each replica how
far it has replayed them (``replication``: WAL positions on PostgreSQL, GTIDs on MariaDB). A replica's lag
is how long ago the primary stood where the replica stands now (from the recent samples), so an idle primary
never makes a replica look behind, and a paused one falls behind only while the primary moves on. Requests
never query positions: they compare against the last sample. Background reads that need a replica past a
position of now wait for the next samples instead (``replica_past``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from goodnight.config import Settings
from goodnight.db import create_engine, is_database_unavailable, read_sessions
from goodnight.kit.background import BackgroundFailures
from goodnight.observability import metrics
from goodnight.replicas.replication import ReplicationUnsupported, replication_for

logger = logging.getLogger("goodnight.replicas")
SAMPLE_SECONDS = 0.5
# A replica that does not answer a sample within this is counted as down until it does.
SAMPLE_TIMEOUT_SECONDS = 1.0
# How long ``replica_past`` waits for the samples to show a replica past a position of now: the next round
# usually does (healthy replicas replay within milliseconds); the one after covers a round that was already
# under way when the position was taken.
FENCE_WAIT_SECONDS = 2 * SAMPLE_SECONDS

DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}

ReplicaStatus = Literal["ok", "lagging", "down"]


@dataclass(eq=False)
class Replica:
    name: str  # host:port, never the URL: it may carry a password, and it labels metrics
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    replayed: int = 0
    lag_seconds: float | None = None  # None until it has answered a sample
    status: ReplicaStatus = "down"

    def serves(self, position: int) -> bool:
        return self.status == "ok" and self.replayed >= position


@dataclass
class _PrimaryHistory:
    """The primary's recent positions, oldest first: enough to date any healthy replica's position."""

    horizon_seconds: float
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, moment: float, position: int) -> None:
        self.samples.append((moment, position))
        while self.samples and self.samples[0][0] < moment - self.horizon_seconds:
            self.samples.popleft()

    def lag(self, replayed: int, now: float) -> float:
        """Seconds since the primary last stood at or before ``replayed`` (0 when it still does)."""
        at_or_before = [moment for moment, position in self.samples if position <= replayed]
        if not at_or_before:
            return self.horizon_seconds  # older than anything remembered: as far behind as we can tell
        return 0.0 if at_or_before[-1] == self.samples[-1][0] else now - at_or_before[-1]


class ReplicaSet:
    def __init__(self, settings: Settings, primary: AsyncEngine) -> None:
        self.max_lag = settings.replica_max_lag_seconds
        self._primary = primary
        self.replication = replication_for(settings.database_url)
        self._checked = False  # the primary's replication, once it first answers
        self._refusing = False  # the primary's positions stopped being comparable: no replica is read
        self.replicas = [_replica(url, settings) for url in settings.replica_url_list]
        self._turn = itertools.count()
        self._history = _PrimaryHistory(horizon_seconds=self.max_lag * 4 + SAMPLE_SECONDS * 4)
        self._task: asyncio.Task[None] | None = None
        self._failures = BackgroundFailures(logger, is_database_unavailable)
        self._sampled = asyncio.Condition()  # notified after every round of samples

    def choose(self, position: int) -> Replica | None:
        """A healthy replica that has replayed ``position``, in turn; None sends the read to the primary."""
        eligible = [replica for replica in self.replicas if replica.serves(position)]
        if not eligible:
            return None
        return eligible[next(self._turn) % len(eligible)]

    async def replica_past(self, position: int, *, within: float = FENCE_WAIT_SECONDS) -> Replica | None:
        """A healthy replica that has replayed ``position``, waiting up to ``within`` seconds for the samples
        to show one; None (read the primary) when none does in time, or none is healthy to wait for."""
        try:
            async with asyncio.timeout(within), self._sampled:
                while (replica := self.choose(position)) is None:
                    if all(other.status != "ok" for other in self.replicas):
                        return None
                    await self._sampled.wait()
                return replica
        except TimeoutError:
            return None

    def mark_down(self, replica: Replica) -> None:
        """A read found the replica unreachable: skip it until a sample finds it answering again."""
        if replica.status != "down":
            logger.warning("replica %s is unreachable; reading from the others or the primary", replica.name)
        self._down(replica)

    async def sample(self) -> None:
        """One round of positions: the primary's, then every replica's at once."""
        async with self._primary.connect() as connection:
            if not self._checked:
                await self.replication.check(connection)
                self._checked = True
            position = await self.replication.primary_position(connection)
        self._refusing = False
        now = time.monotonic()
        self._history.add(now, position)
        await asyncio.gather(*(self._sample(replica, now) for replica in self.replicas))
        async with self._sampled:
            self._sampled.notify_all()

    async def _sample(self, replica: Replica, now: float) -> None:
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_SECONDS), replica.engine.connect() as connection:
                replayed = await self.replication.replayed_position(connection)
        except Exception as exc:
            if replica.status != "down":
                logger.warning("replica %s stopped answering: %s", replica.name, exc)
            self._down(replica)
            return
        if replayed is None:  # not a standby (a promoted replica, a misconfigured URL): never read from it
            self._down(replica)
            return
        replica.replayed = replayed
        replica.lag_seconds = round(self._history.lag(replica.replayed, now), 3)
        healthy = replica.lag_seconds <= self.max_lag
        if replica.status == "down" and healthy:
            logger.info("replica %s is answering and caught up; reading from it again", replica.name)
        replica.status = "ok" if healthy else "lagging"
        metrics.replica_sampled(replica.name, replica.lag_seconds)

    def _down(self, replica: Replica) -> None:
        replica.status, replica.lag_seconds = "down", None
        metrics.replica_sampled(replica.name, None)

    async def start(self) -> None:
        """Take the first samples, then sample in the background. A primary whose positions cannot be
        compared stops the start-up (``ReplicationUnsupported``); one that cannot be reached yet is checked
        by the samples, once it answers."""
        try:
            await self.sample()
        except ReplicationUnsupported:
            raise
        except Exception as exc:
            self._failures.report(exc, "could not sample the primary's replication position")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            try:
                await self.sample()
            except ReplicationUnsupported as exc:  # the primary changed under us (a second GTID domain)
                self._refuse(exc)
            except Exception as exc:  # the primary is away: keep the last view, try again next round
                self._failures.report(exc, "could not sample the primary's replication position")

    def _refuse(self, exc: ReplicationUnsupported) -> None:
        """No replica can be trusted any more: read the primary only, and say why (once, not every round)."""
        if not self._refusing:
            logger.error("reading from no replica until the primary can be followed again: %s", exc)
            self._refusing = True
        for replica in self.replicas:
            self._down(replica)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for replica in self.replicas:
            await replica.engine.dispose()


def _replica(url: str, settings: Settings) -> Replica:
    parsed = make_url(url)
    engine = create_engine(settings.model_copy(update={"database_url": url}))
    return Replica(
        name=f"{parsed.host}:{parsed.port or DEFAULT_PORTS.get(parsed.get_backend_name(), '')}",
        engine=engine,
        sessions=read_sessions(engine),
    )
