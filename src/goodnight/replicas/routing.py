"""Sending each read to a replica or to the primary, and remembering each user's writes."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from goodnight.db import Database, is_database_unavailable
from goodnight.observability import metrics
from goodnight.replicas.pool import Replica, ReplicaSet
from goodnight.replicas.positions import WritePositions
from goodnight.replicas.replication import ReplicationUnsupported

logger = logging.getLogger("goodnight.replicas")


@dataclass
class ReadAttempt:
    """One request's reads, as the fallback middleware sees them: a replica failed, so read the primary."""

    replica_failed: bool = False
    primary_only: bool = False


read_attempt: ContextVar[ReadAttempt | None] = ContextVar("goodnight_read_attempt", default=None)


class ReadRouting:
    def __init__(self, database: Database, replicas: ReplicaSet, positions: WritePositions) -> None:
        self.database = database
        self.replicas = replicas
        self.positions = positions
        # Position queries skip BEGIN/ROLLBACK: one round trip after a write.
        self._autocommit = database.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.reads: Counter[str] = Counter()  # "primary" or "replica"

    async def _replica_for(self, user_id: uuid.UUID | None) -> Replica | None:
        attempt = read_attempt.get()
        if attempt is not None and attempt.primary_only:
            return None
        position = 0 if user_id is None else await self.positions.required(user_id)
        return None if position is None else self.replicas.choose(position)

    @asynccontextmanager
    async def session(self, user_id: uuid.UUID | None) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work on a replica that has replayed the user's writes, else on the primary."""
        async with self._read_on(await self._replica_for(user_id)) as session:
            yield session

    @asynccontextmanager
    async def fenced_session(self) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work on a replica that has replayed everything committed on the primary so far
        (waiting for the samples to show one, a second at most), else on the primary."""
        position = await self.primary_position()
        replica = None if position is None else await self.replicas.replica_past(position)
        async with self._read_on(replica) as session:
            yield session

    @asynccontextmanager
    async def _read_on(self, replica: Replica | None) -> AsyncIterator[AsyncSession]:
        """A session on ``replica``, or on the primary (None, or the replica is found gone)."""
        session = replica.sessions() if replica is not None else self.database.reader()
        if replica is not None:
            try:
                # Check out the connection now, so a replica that has just died is found before any of the
                # request's work has run, and the read moves to the primary.
                await session.connection()
            except Exception as exc:
                await session.close()
                if not is_database_unavailable(exc):
                    raise
                self.replicas.mark_down(replica)
                replica, session = None, self.database.reader()
        target = "replica" if replica is not None else "primary"
        self.reads[target] += 1
        metrics.read_routed(target)
        try:
            async with session:
                yield session
        except Exception as exc:
            if replica is not None and is_database_unavailable(exc):
                self._replica_failed(replica)
            raise

    @asynccontextmanager
    async def connection(self, user_id: uuid.UUID | None) -> AsyncIterator[AsyncConnection]:
        """The connection of such a unit of work, for Core reads."""
        async with self.session(user_id) as session:
            yield await session.connection()

    def _replica_failed(self, replica: Replica) -> None:
        self.replicas.mark_down(replica)
        attempt = read_attempt.get()
        if attempt is not None:
            attempt.replica_failed = True

    async def wrote(self, user_id: uuid.UUID) -> None:
        """After ``user_id``'s write committed: their reads wait for a replica that has replayed it."""
        position = await self.primary_position()
        if position is not None:
            await self.positions.remember(user_id, position)

    async def primary_position(self) -> int | None:
        """Where the primary's writes stand now; None when it cannot tell: unreachable (logged here), or
        its positions stopped being comparable (the sampler has reported it, and reads no replica)."""
        try:
            async with self._autocommit.connect() as connection:
                return await self.replicas.replication.primary_position(connection)
        except ReplicationUnsupported:
            return None
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            logger.warning("could not read the primary's replication position: %s", exc)
            return None
