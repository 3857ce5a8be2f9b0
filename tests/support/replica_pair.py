"""A private primary with a streaming replica of it, for the read-replica tests on either backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from tests.support.mariadb_server import MariaDbServer
from tests.support.postgres_server import PostgresServer

Server = TypeVar("Server", PostgresServer, MariaDbServer)


@contextmanager
def primary_with_replica(kind: type[Server]) -> Iterator[tuple[Server, Server]]:
    """Both started on spare ports, the replica replicating; both stopped and removed afterwards."""
    primary = kind().start()
    try:
        replica = kind.replica_of(primary).start()
        try:
            yield primary, replica
        finally:
            replica.close()
    finally:
        primary.close()
