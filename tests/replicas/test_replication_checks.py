"""A primary whose replicas cannot be followed by one growing position is refused at start-up, and stops
the replicas being read if it becomes one while serving: never a read from a replica that might not hold
the reader's writes."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio
import sqlalchemy as sa

from goodnight.migrate import upgrade_to_head
from goodnight.models import User
from goodnight.replicas.replication import ReplicationUnsupported, gtid_sequences, require_mariadb
from goodnight.replicas.routing import ReadRouting
from tests.support.api import Api
from tests.support.apps import client_for, running
from tests.support.databases import TestDatabase, create_database, settings_for
from tests.support.logs import app_logs
from tests.support.mariadb_server import MariaDbServer
from tests.support.replica_pair import primary_with_replica

TIMEOUT_S = 15.0


def test_a_gtid_position_is_a_sequence_per_domain() -> None:
    assert gtid_sequences("0-1-42") == {0: 42}
    assert gtid_sequences("0-1-42,7-3-5") == {0: 42, 7: 5}
    assert gtid_sequences("") == {}


def test_mysql_is_refused_for_its_gtids() -> None:
    require_mariadb("10.11.19-MariaDB-0+deb12u1")
    with pytest.raises(ReplicationUnsupported, match="need MariaDB's GTIDs"):
        require_mariadb("8.0.36")


@pytest_asyncio.fixture
async def unlogged() -> AsyncIterator[TestDatabase]:
    """A database on the shared MariaDB server, which writes no binary log."""
    created = await create_database("mariadb")
    yield created
    await created.drop()


async def test_a_primary_without_a_binary_log_is_refused_at_start_up(unlogged: TestDatabase) -> None:
    settings = settings_for(unlogged.url, database_replica_urls=unlogged.url)
    with pytest.raises(ReplicationUnsupported, match="writes no binary log"):
        async with running(settings):
            pass


@pytest.fixture
def pair() -> Iterator[tuple[MariaDbServer, MariaDbServer]]:
    with primary_with_replica(MariaDbServer) as servers:
        yield servers


@pytest.mark.slow
async def test_a_second_gtid_domain_stops_replica_reads_and_the_next_start_up(
    pair: tuple[MariaDbServer, MariaDbServer],
) -> None:
    primary, replica = pair
    await upgrade_to_head(settings_for(primary.url))
    settings = settings_for(primary.url, database_replica_urls=replica.url)
    async with running(settings) as app, client_for(app) as client:
        routing: ReadRouting = app.state.services.read_routing
        replicas = routing.replicas.replicas
        await _eventually(lambda: replicas[0].status == "ok")
        with app_logs() as logs:
            # A transaction in a domain of its own, as another source replicating into the primary writes.
            other_domain = (
                "SET SESSION gtid_domain_id = 7; CREATE TABLE goodnight.elsewhere (id INT PRIMARY KEY)"
            )
            await asyncio.to_thread(primary.sql, other_domain)
            await _eventually(lambda: replicas[0].status == "down")
            await asyncio.sleep(1.0)  # a few more rounds, reported once
        refusals = [record for record in logs if record.levelno == logging.ERROR]
        assert len(refusals) == 1
        assert "replication domains [7]" in refusals[0].getMessage()

        replica_reads = routing.reads["replica"]
        ana = await Api(client).register()
        renamed = await Api(client).rename(ana, "Ana Two")
        assert renamed.status_code == 200  # the write's position cannot be told; the write stands
        me = await client.get("/users/me", headers=ana.headers)
        assert me.json()["name"] == "Ana Two"
        async with app.state.services.database.fenced_session() as session:  # as a rebuild reads
            name = await session.scalar(sa.select(User.name).where(User.id == uuid.UUID(ana.id)))
        assert name == "Ana Two"
        assert routing.reads["replica"] == replica_reads
    with pytest.raises(ReplicationUnsupported, match=r"replication domains \[7\] besides its own \(0\)"):
        async with running(settings):
            pass


async def _eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)
