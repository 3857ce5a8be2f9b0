"""Where the primary's writes stand and how far a replica has applied them, as one integer that only grows:
positions compare with ``>=``, keep in a Redis sorted set (``positions``), and date a replica's lag
(``pool``), the same way on every backend.

PostgreSQL: the WAL position (LSN), ``pg_current_wal_lsn()`` on the primary, ``pg_last_wal_replay_lsn()`` on a
standby (NULL when the server is not a standby).

MariaDB: GTIDs. A GTID position lists ``domain-server-sequence`` for each replication domain, and within a
domain the sequence only grows, whichever server wrote it (a promoted replica carries it on). The primary
writes every transaction of ours in its own domain (``@@gtid_domain_id``), so a position is the sequence in
that domain: of ``@@gtid_binlog_pos`` on the primary, of ``@@gtid_slave_pos`` on a replica. A primary whose
binary log holds GTIDs of any other domain is refused: a replica applies domains independently of each
other, so one number could no longer say what it has replayed. MySQL's GTIDs (sets of UUID ranges) are not
supported.
"""

from __future__ import annotations

from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from goodnight.config import ConfigurationError


class ReplicationUnsupported(ConfigurationError):
    """The primary's positions cannot be compared the way read-your-writes needs."""


class Replication(Protocol):
    async def check(self, primary: AsyncConnection) -> None:
        """Refuse (``ReplicationUnsupported``) a primary whose replicas cannot be followed this way."""

    async def primary_position(self, primary: AsyncConnection) -> int: ...

    async def replayed_position(self, replica: AsyncConnection) -> int | None:
        """How far the replica has applied the primary's writes; None when it is not a replica of it."""


class PostgresReplication:
    async def check(self, primary: AsyncConnection) -> None:
        await self.primary_position(primary)

    async def primary_position(self, primary: AsyncConnection) -> int:
        return int(await primary.scalar(sa.text("SELECT pg_current_wal_lsn()")))

    async def replayed_position(self, replica: AsyncConnection) -> int | None:
        replayed = await replica.scalar(sa.text("SELECT pg_last_wal_replay_lsn()"))
        return None if replayed is None else int(replayed)


def gtid_sequences(position: str) -> dict[int, int]:
    """Each domain's sequence number in a GTID position: ``"0-1-42,7-3-5"`` is ``{0: 42, 7: 5}``."""
    sequences: dict[int, int] = {}
    for gtid in position.split(","):
        if gtid.strip():
            domain, _server, sequence = gtid.strip().split("-")
            sequences[int(domain)] = int(sequence)
    return sequences


def require_mariadb(version: str) -> None:
    if "mariadb" not in version.lower():
        raise ReplicationUnsupported(
            f"GOODNIGHT_DATABASE_REPLICA_URLS: the primary runs {version}; read replicas need MariaDB's "
            "GTIDs (MySQL's are not supported)"
        )


class MariaDbReplication:
    def __init__(self) -> None:
        self.domain: int | None = None  # the primary's, learnt from its first position

    async def check(self, primary: AsyncConnection) -> None:
        version, log_bin = (await primary.execute(sa.text("SELECT VERSION(), @@global.log_bin"))).one()
        require_mariadb(version)
        if not log_bin:
            raise ReplicationUnsupported(
                "GOODNIGHT_DATABASE_REPLICA_URLS: the primary writes no binary log (start it with "
                "--log-bin), so no replica can follow it"
            )
        await self.primary_position(primary)

    async def primary_position(self, primary: AsyncConnection) -> int:
        query = sa.text("SELECT @@global.gtid_domain_id, @@global.gtid_binlog_pos")
        domain, binlog_position = (await primary.execute(query)).one()
        sequences = gtid_sequences(binlog_position)
        if others := sorted(sequences.keys() - {domain}):
            raise ReplicationUnsupported(
                "GOODNIGHT_DATABASE_REPLICA_URLS: the primary's binary log holds GTIDs of replication "
                f"domains {others} besides its own ({domain}); read replicas need a single domain (purge the "
                "binary logs that hold the others, then FLUSH BINARY LOGS DELETE_DOMAIN_ID=(...))"
            )
        self.domain = int(domain)
        return sequences.get(self.domain, 0)

    async def replayed_position(self, replica: AsyncConnection) -> int | None:
        if self.domain is None:
            return None  # the primary has not been asked yet: nothing to compare with
        replayed = await replica.scalar(sa.text("SELECT @@global.gtid_slave_pos"))
        return gtid_sequences(replayed or "").get(self.domain, 0)


def replication_for(database_url: str) -> Replication:
    """The primary's backend decides (the settings have checked every replica is on the same one)."""
    if make_url(database_url).get_backend_name() == "postgresql":
        return PostgresReplication()
    return MariaDbReplication()
