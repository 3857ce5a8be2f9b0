"""Read replicas on real servers, on PostgreSQL and on MariaDB: a private primary with a replica of it (a
streaming hot standby; a GTID replica).

Reads go to the replica and answer exactly what the primary would; a user's own writes are visible on their
very next read even while the replica is provably behind (its replay paused); a timeline rebuild reads a
replica only once it has replayed everything committed before the rebuild; a replica that dies under load
costs no request a 5xx, and is used again once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from goodnight.migrate import upgrade_to_head
from goodnight.models import User
from goodnight.replicas.pool import ReplicaSet
from goodnight.replicas.routing import ReadRouting
from tests.support.api import Api, Member
from tests.support.apps import AppTimeline, client_for, running, timeline_of, timeline_settings
from tests.support.databases import settings_for
from tests.support.mariadb_server import MariaDbServer
from tests.support.metrics import scrape
from tests.support.nights import logged
from tests.support.outbox import record_id_of, redis_timelines
from tests.support.postgres_server import PostgresServer
from tests.support.processes import clean_env, serving
from tests.support.redis_server import RedisServer
from tests.support.replica_pair import primary_with_replica
from tests.support.times import ago

pytestmark = pytest.mark.slow
CATCH_UP_TIMEOUT_S = 15.0

Server = PostgresServer | MariaDbServer
SERVERS: dict[str, type[Server]] = {"postgresql": PostgresServer, "mariadb": MariaDbServer}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def servers(request: pytest.FixtureRequest) -> Iterator[tuple[Server, Server]]:
    with primary_with_replica(SERVERS[request.param]) as pair:  # type: ignore[type-var]
        yield pair


@pytest_asyncio.fixture(scope="module")
async def primary(servers: tuple[Server, Server]) -> Server:
    await upgrade_to_head(settings_for(servers[0].url))
    return servers[0]


@pytest.fixture(scope="module")
def replica(servers: tuple[Server, Server]) -> Server:
    return servers[1]


@contextlib.asynccontextmanager
async def replay_paused(replica: Server) -> AsyncIterator[None]:
    """The replica receives the primary's writes but applies none of them until the block ends."""
    await replica.pause_replay()
    try:
        yield
    finally:
        await replica.resume_replay()


@pytest_asyncio.fixture
async def paused(replica: Server) -> AsyncIterator[None]:
    async with replay_paused(replica):
        yield


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


def routing_of(app: FastAPI) -> ReadRouting:
    routing: ReadRouting | None = app.state.services.read_routing
    assert routing is not None, "the app was built without replicas"
    return routing


def replicas_of(app: FastAPI) -> ReplicaSet:
    return routing_of(app).replicas


async def caught_up(app: FastAPI) -> None:
    """Until the app's last sample shows the replica at the primary's position of now, and healthy."""
    target = await routing_of(app).primary_position()
    assert target is not None
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while not all(replica.serves(target) for replica in replicas_of(app).replicas):
        assert time.monotonic() < deadline, "the replica did not catch up"
        await asyncio.sleep(0.1)


async def _name_on(server: Server, who: Member) -> str | None:
    """The user's name as ``server`` has it now."""
    engine = create_async_engine(server.url)
    try:
        async with engine.connect() as connection:
            name: str | None = await connection.scalar(
                sa.select(User.name).where(User.id == uuid.UUID(who.id))
            )
            return name
    finally:
        await engine.dispose()


@pytest_asyncio.fixture
async def routed(primary: Server, replica: Server) -> AsyncIterator[FastAPI]:
    settings = settings_for(primary.url, database_replica_urls=replica.url)
    async with running(settings) as app:
        await caught_up(app)
        yield app


@pytest_asyncio.fixture
async def timelined(primary: Server, replica: Server, redis: RedisServer) -> AsyncIterator[FastAPI]:
    """Routed, with the Redis timelines."""
    settings = timeline_settings(primary.url, redis.url, database_replica_urls=replica.url)
    async with running(settings) as app:
        await caught_up(app)
        yield app


@pytest_asyncio.fixture
async def direct(primary: Server) -> AsyncIterator[FastAPI]:
    async with running(settings_for(primary.url)) as app:
        yield app


async def _people(api: Api) -> tuple[Member, Member, Member]:
    ana, ben, cy = await api.register(name="Ana"), await api.register(name="Ben"), await api.register()
    await api.follow(ana, ben)
    await api.follow(ana, cy)
    await api.follow(cy, ben)
    for days, who in ((1, ben), (2, cy), (3, ben)):
        await logged(api.client, who, ago(days=days, hours=8), ago(days=days))
    return ana, ben, cy


def _reads(ana: Member, ben: Member) -> list[tuple[str, Member]]:
    return [
        ("/users/me", ana),
        (f"/users/{ben.id}", ana),
        (f"/users/{ben.id}/followers", ana),
        (f"/users/{ana.id}/followings", ana),
        (f"/users/{ben.id}/sleep_summary", ana),
        (f"/users?q={ben.username[:4]}", ana),
        ("/sleep_records", ben),
        ("/sleep_records/followings?per_page=2", ana),
        ("/sleep_records/followings?start_index=1&per_page=1", ana),
    ]


def _stable(response: httpx.Response) -> object:
    """The body, but for a feed's next_cursor: it carries the window's start, which moves with the clock."""
    body = response.json()
    if "next_cursor" in body.get("pagination", {}):
        body["pagination"]["next_cursor"] = body["pagination"]["next_cursor"] is not None
    return body


async def test_reads_from_the_replica_answer_what_the_primary_answers(
    routed: FastAPI, direct: FastAPI
) -> None:
    async with client_for(routed) as via_replica, client_for(direct) as via_primary:
        ana, ben, _ = await _people(Api(via_replica))
        await caught_up(routed)
        routing = routing_of(routed)
        before = dict(routing.reads)
        counted = await scrape(via_replica)
        for path, who in _reads(ana, ben):
            from_replica = await via_replica.get(path, headers=who.headers)
            from_primary = await via_primary.get(path, headers=who.headers)
            assert from_replica.status_code == 200, (path, from_replica.text)
            assert _stable(from_replica) == _stable(from_primary), path
        assert routing.reads["replica"] - before.get("replica", 0) == len(_reads(ana, ben))
        assert routing.reads["primary"] == before.get("primary", 0)
        ready = (await via_replica.get("/health/ready")).json()["read_replicas"]
        assert ready["replicas"][0]["status"] == "ok"
        assert ready["reads_from_replicas"] >= len(_reads(ana, ben))
        metrics = await scrape(via_replica)
        reads = "goodnight_db_reads_total"
        assert metrics.value(reads, target="replica") - counted.value(reads, target="replica") == len(
            _reads(ana, ben)
        )
        lag = metrics.value("goodnight_db_replica_lag_seconds", replica=ready["replicas"][0]["name"])
        assert 0 <= lag <= routed.state.services.settings.replica_max_lag_seconds


async def test_a_users_writes_are_on_their_next_read_while_the_replica_is_behind(
    replica: Server, routed: FastAPI
) -> None:
    async with client_for(routed) as client:
        api = Api(client)
        ana, ben, _ = await _people(api)
        await caught_up(routed)
        routing = routing_of(routed)
        async with replay_paused(replica):
            await api.follow(ben, ana)
            renamed = await api.rename(ana, "Ana Two")
            assert renamed.status_code == 200
            night = await logged(client, ana, ago(hours=20), ago(hours=12))
            replica_reads = routing.reads["replica"]

            me = (await client.get("/users/me", headers=ana.headers)).json()
            assert me["name"] == "Ana Two"
            followings = (await client.get(f"/users/{ben.id}/followings", headers=ben.headers)).json()
            assert ana.id in {person["id"] for person in followings["data"]}
            history = (await client.get("/sleep_records", headers=ana.headers)).json()
            assert night["id"] in {record["id"] for record in history["data"]}
            # Served by the primary, because the replica provably has none of it yet.
            assert routing.reads["replica"] == replica_reads
            assert await _name_on(replica, ana) == "Ana"
        await caught_up(routed)
        commits_before = await replica.commits()
        me = (await client.get("/users/me", headers=ana.headers)).json()
        assert me["name"] == "Ana Two"
        assert routing.reads["replica"] == replica_reads + 1
        assert await _eventually_more_commits(replica, commits_before)


async def _eventually_more_commits(replica: Server, before: int) -> bool:
    """The replica's own statistics count the read (PostgreSQL flushes them within a second or so)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if await replica.commits() > before:
            return True
        await asyncio.sleep(0.2)
    return False


async def _rebuilt_from(app: FastAPI, reader: Member) -> str:
    """Rebuild the reader's timeline; where its one read went."""
    reads = routing_of(app).reads
    before = reads.copy()
    assert await timeline_of(app).reader.rebuilds.rebuild(uuid.UUID(reader.id))
    routed = reads - before
    assert routed.total() == 1, routed
    return next(iter(routed))


async def _timeline_records(timeline: AppTimeline, reader: Member) -> set[str]:
    entries = (await redis_timelines(timeline.redis, [uuid.UUID(reader.id)]))[uuid.UUID(reader.id)]
    return {str(record_id_of(member)) for _, member in entries}


async def test_a_rebuild_reads_a_replica_only_once_it_has_replayed_what_came_before(
    replica: Server, timelined: FastAPI
) -> None:
    async with client_for(timelined) as client:
        ana, ben, _ = await _people(Api(client))
        await caught_up(timelined)
        async with replay_paused(replica):
            night = await logged(client, ben, ago(hours=20), ago(hours=12))
            # The replica has not replayed the night (nor the rebuild's own mark): the primary is read.
            assert await _rebuilt_from(timelined, ana) == "primary"
            assert night["id"] in await _timeline_records(timeline_of(timelined), ana)
        await caught_up(timelined)
        # Replaying again, the replica passes the rebuild's fence within a sample or two: it is read.
        assert await _rebuilt_from(timelined, ana) == "replica"
        assert night["id"] in await _timeline_records(timeline_of(timelined), ana)


async def test_a_replica_stopped_under_load_costs_no_request_a_5xx(
    replica: Server, timelined: FastAPI
) -> None:
    async with client_for(timelined) as client:
        ana, ben, _ = await _people(Api(client))
        await caught_up(timelined)
        statuses: list[int] = []
        stop = asyncio.Event()

        async def reader() -> None:
            paths = _reads(ana, ben)
            turn = 0
            while not stop.is_set():
                path, who = paths[turn % len(paths)]
                turn += 1
                response = await client.get(path, headers=who.headers)
                statuses.append(response.status_code)

        readers = [asyncio.create_task(reader()) for _ in range(8)]
        try:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(replica.stop)
            await asyncio.sleep(1.5)
            assert replicas_of(timelined).replicas[0].status == "down"
            name = replicas_of(timelined).replicas[0].name
            assert (await scrape(client)).value("goodnight_db_replica_lag_seconds", replica=name) == math.inf
            # With no replica to read, a rebuild reads the primary.
            assert await timeline_of(timelined).reader.rebuilds.rebuild(uuid.UUID(ana.id))
            assert len(await _timeline_records(timeline_of(timelined), ana)) == 3
            await asyncio.to_thread(replica.start)
            await caught_up(timelined)
            served = routing_of(timelined).reads["replica"]
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.gather(*readers)
        assert statuses
        assert set(statuses) == {200}, {status: statuses.count(status) for status in set(statuses)}
        assert routing_of(timelined).reads["replica"] > served  # used again once it was back


async def test_read_your_writes_holds_across_processes(
    tmp_path: Path, primary: Server, replica: Server, redis: RedisServer, paused: None
) -> None:
    env = clean_env(
        GOODNIGHT_DATABASE_URL=primary.url,
        GOODNIGHT_DATABASE_REPLICA_URLS=replica.url,
        GOODNIGHT_REDIS_URL=redis.url,
    )
    with (
        serving(tmp_path, env, log_name="one.log") as one,
        serving(tmp_path, env, log_name="two.log") as two,
    ):
        async with (
            httpx.AsyncClient(base_url=one.api_url) as first,
            httpx.AsyncClient(base_url=two.api_url) as second,
        ):
            ana = await Api(first).register()
            renamed = await Api(first).rename(ana, "Written on one")
            assert renamed.status_code == 200
            me = await second.get("/users/me", headers=ana.headers)
            assert me.status_code == 200, me.text
            assert me.json()["name"] == "Written on one"
            ready = (await second.get("/health/ready")).json()["read_replicas"]
            assert ready["reads_from_replicas"] == 0  # the replica is paused: it had to be the primary
