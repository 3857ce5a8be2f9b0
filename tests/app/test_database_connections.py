"""PostgreSQL connections: reads send one statement each, and a connection the server dropped is replaced
before any request uses it."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy as sa
from fastapi import FastAPI

from goodnight import db
from goodnight.db import Database
from goodnight.kit.driver_select import DriverSelect
from tests.support.api import Api, Member
from tests.support.apps import client_for, running
from tests.support.databases import TestDatabase, settings_for
from tests.support.statements import Statement, statements


@pytest_asyncio.fixture
async def app(postgres_database: TestDatabase) -> AsyncIterator[FastAPI]:
    async with running(settings_for(postgres_database.url)) as application:
        yield application


def database_of(app: FastAPI) -> Database:
    found: Database = app.state.services.database
    return found


@contextmanager
def sent_by_driver(database: Database) -> Iterator[list[str]]:
    """The unprepared queries asyncpg sends on the connections the pool opens from now on: transaction
    control and pings, which SQLAlchemy's own events do not see."""
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(record.query.strip())

    def attach(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(log)

    sync_engine = database.engine.sync_engine
    sa.event.listen(sync_engine, "connect", attach)
    try:
        yield sent
    finally:
        sa.event.remove(sync_engine, "connect", attach)


@asynccontextmanager
async def everything_sent(app: FastAPI) -> AsyncIterator[tuple[list[str], list[Statement]]]:
    """What the driver (``sent_by_driver``) and SQLAlchemy (``statements``) send meanwhile, on connections
    opened from here on (the pool is emptied first, so that each carries the query logger)."""
    database = database_of(app)
    await database.engine.dispose()
    with sent_by_driver(database) as by_driver, statements(database.engine) as by_sqlalchemy:
        yield by_driver, by_sqlalchemy


async def terminate_connections(app: FastAPI) -> int:
    """What an administrator's ``pg_terminate_backend`` (or a server restart) does to the app's pool; waits
    until the backends have exited."""
    database = database_of(app)
    name = database.engine.url.database
    admin = sa.ext.asyncio.create_async_engine(database.engine.url.set(database="postgres"))
    try:
        async with admin.connect() as connection:
            query = sa.text(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            )
            return int(await connection.scalar(query, {"name": name}) or 0)
    finally:
        await admin.dispose()


async def profile_reads(api: Api, member: Member, count: int) -> list[int]:
    return [(await api.client.get("/users/me", headers=member.headers)).status_code for _ in range(count)]


async def test_a_read_sends_its_query_and_nothing_else(app: FastAPI) -> None:
    async with everything_sent(app) as (unprepared, queries), client_for(app) as client:
        api = Api(client)
        member = await api.register()
        assert "BEGIN;" in unprepared, "the logger does not see transaction control"
        unprepared.clear()
        queries.clear()
        assert await profile_reads(api, member, 10) == [200] * 10
    # One SELECT per read, straight from the driver (``kit.driver_select``), with no BEGIN/COMMIT around it
    # and no ping (BEGIN, an empty query, ROLLBACK) before it.
    assert queries == []
    assert len(unprepared) == 10, unprepared
    assert all(sql.startswith("SELECT") and "FROM users" in sql for sql in unprepared), unprepared


async def test_an_idle_connection_is_pinged_before_use(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    database = database_of(app)
    await database.engine.dispose()
    with sent_by_driver(database) as unprepared:
        async with client_for(app) as client:
            api = Api(client)
            member = await api.register()
            monkeypatch.setattr(db, "IDLE_PING_SECONDS", -1.0)  # every pooled connection counts as idle
            unprepared.clear()
            assert await profile_reads(api, member, 1) == [200]
    assert ";" in unprepared, unprepared


async def test_connections_the_server_closed_are_replaced_without_a_failed_request(app: FastAPI) -> None:
    async with client_for(app) as client:
        api = Api(client)
        member = await api.register()
        assert await profile_reads(api, member, 3) == [200] * 3
        assert await terminate_connections(app) >= 1
        # The server closes them at once; the driver sees it the next time the event loop polls the sockets.
        # (A request that checks one out within that very moment fails with a 503, as the docstring of
        # ``db._check_on_checkout`` says.)
        await asyncio.sleep(0.2)
        assert await profile_reads(api, member, 10) == [200] * 10


async def test_a_connection_idle_too_long_is_pinged_and_replaced_when_the_ping_fails(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = database_of(app)
    dialect = database.engine.dialect
    pings: list[object] = []

    real_ping = dialect.do_ping

    def ping_failing_once(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        if len(pings) == 1:
            raise ConnectionResetError("the connection was dropped while idle")
        return real_ping(dbapi_connection)

    async with client_for(app) as client:
        api = Api(client)
        member = await api.register()
        assert await profile_reads(api, member, 3) == [200] * 3
        monkeypatch.setattr(db, "IDLE_PING_SECONDS", -1.0)  # every pooled connection counts as idle
        monkeypatch.setattr(dialect, "do_ping", ping_failing_once)
        opened: list[object] = []
        sa.event.listen(database.engine.sync_engine, "connect", lambda conn, _record: opened.append(conn))
        assert await profile_reads(api, member, 1) == [200]
    assert pings, "the idle connection was not pinged"
    assert opened, "the connection that failed its ping was not replaced"


async def test_a_connection_in_steady_use_is_not_pinged(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[object] = []
    monkeypatch.setattr(database_of(app).engine.dialect, "do_ping", pings.append)
    async with client_for(app) as client:
        api = Api(client)
        member = await api.register()
        assert await profile_reads(api, member, 5) == [200] * 5
    assert pings == []


async def test_connections_opened_under_load_stay_open_for_the_next_burst(
    postgres_database: TestDatabase,
) -> None:
    database = Database(settings_for(postgres_database.url, database_pool_size=2))
    opened: list[object] = []
    sa.event.listen(database.engine.sync_engine, "connect", lambda conn, _record: opened.append(conn))
    release, all_held = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with database.read_connection(None) as connection:
            await connection.execute(sa.text("SELECT 1"))
            if database.engine.pool.checkedout() == 4:
                all_held.set()
            await release.wait()

    try:
        for _ in range(2):  # two bursts of four: twice the configured size, the most a pool opens
            holders = [asyncio.create_task(hold()) for _ in range(4)]
            await all_held.wait()
            release.set()
            await asyncio.gather(*holders)
            release.clear()
            all_held.clear()
            assert database.engine.pool.checkedin() == 4
        assert len(opened) == 4  # the second burst reused the first one's connections
    finally:
        await database.engine.dispose()


@pytest.mark.parametrize(
    "path",
    [
        "/sleep_records?limit=5",
        "/sleep_records/followings?per_page=5",
        "/users?q=user&per_page=5",
    ],
)
async def test_page_queries_carry_their_limit_as_a_number(app: FastAPI, path: str) -> None:
    """A LIMIT sent as a parameter made PostgreSQL plan the prepared statement again on every execution
    (``kit.keyset.page_limit``)."""
    async with client_for(app) as client:
        api = Api(client)
        member = await api.register()
        with statements(database_of(app).engine) as sent:
            response = await client.get(path.format(id=member.id), headers=member.headers)
        assert response.status_code == 200, response.text
    paged = [statement.sql for statement in sent if "LIMIT" in statement.sql]
    assert paged, sent
    assert all(re.search(r"LIMIT 6\b", sql) for sql in paged), paged


async def test_list_pages_go_straight_to_the_driver_with_their_limit_written_in(app: FastAPI) -> None:
    """Followers and followings pages skip SQLAlchemy's execution on PostgreSQL (``kit.driver_select``)."""
    async with everything_sent(app) as (by_driver, by_sqlalchemy), client_for(app) as client:
        api = Api(client)
        member, follower = await api.register(), await api.register()
        await api.follow(follower, member)
        by_driver.clear()
        by_sqlalchemy.clear()
        for path in ("/users/{id}/followers?limit=5", "/users/{id}/followings?limit=5"):
            response = await client.get(path.format(id=member.id), headers=member.headers)
            assert response.status_code == 200, response.text
    assert not [statement for statement in by_sqlalchemy if "follows" in statement.sql], by_sqlalchemy
    paged = [sql for sql in by_driver if "follows" in sql]
    assert len(paged) >= 2, by_driver
    assert all(re.search(r"LIMIT 6\b", sql) for sql in paged), paged


async def test_a_driver_read_on_a_connection_killed_under_it_fails_as_sqlalchemy_would(app: FastAPI) -> None:
    """The failure reaches the app as SQLAlchemy's own (a 503, a replica left for the primary), and the dead
    connection is invalidated rather than given back to the pool."""
    database = database_of(app)
    select = DriverSelect(sa.select(sa.literal(1).label("one")))
    async with database.read_connection(None) as connection:
        assert [tuple(row) for row in await select.rows(connection, {})] == [(1,)]
        assert await terminate_connections(app) >= 1
        with pytest.raises(sa.exc.DBAPIError) as raised:
            await select.rows(connection, {})
    assert db.is_database_unavailable(raised.value)
    assert raised.value.connection_invalidated
    async with database.read_connection(None) as connection:  # a fresh connection serves again
        assert [tuple(row) for row in await select.rows(connection, {})] == [(1,)]


async def test_an_empty_list_page_checks_its_user_on_the_driver_too(app: FastAPI) -> None:
    """An empty page costs a second query (does the user exist?); like the page's own, it is sent alone,
    without a transaction around it."""
    async with everything_sent(app) as (by_driver, by_sqlalchemy), client_for(app) as client:
        member = await Api(client).register()
        by_driver.clear()
        by_sqlalchemy.clear()
        lonely = await client.get(f"/users/{member.id}/followers", headers=member.headers)
        unknown = await client.get(f"/users/{uuid.uuid4()}/followers", headers=member.headers)
    assert lonely.status_code == 200, lonely.text
    assert lonely.json()["data"] == []
    assert unknown.status_code == 404, unknown.text
    assert by_sqlalchemy == []
    assert len(by_driver) == 4, by_driver  # each page's query and its user's
    assert all(sql.startswith("SELECT") for sql in by_driver), by_driver
