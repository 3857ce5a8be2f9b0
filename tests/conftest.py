"""Fixtures: the app on SQLite, PostgreSQL and MariaDB, one throwaway database each per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from goodnight.deps import Services
from goodnight.main import create_app
from goodnight.redis_client import Breaker
from tests.support.api import Api
from tests.support.apps import AppTimeline, client_for, running, timeline_of, timeline_settings
from tests.support.databases import BACKENDS, TestDatabase, create_database, settings_for, truncate
from tests.support.processes import create_empty_database
from tests.support.redis_server import RedisServer


@pytest_asyncio.fixture(scope="session", params=BACKENDS)
async def database(request: pytest.FixtureRequest) -> AsyncIterator[TestDatabase]:
    created = await create_database(request.param)
    yield created
    await created.drop()


@pytest_asyncio.fixture(scope="session")
async def app(database: TestDatabase) -> AsyncIterator[FastAPI]:
    application = create_app(settings_for(database.url))
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(scope="module")
async def sqlite() -> AsyncIterator[TestDatabase]:
    """A SQLite database of the module's own, for tests that build apps with settings of their own and need
    one backend only (what they check never depends on the database)."""
    created = await create_database("sqlite")
    yield created
    await created.drop()


@pytest_asyncio.fixture(scope="module")
async def postgres_database() -> AsyncIterator[TestDatabase]:
    """A PostgreSQL database of the module's own, for tests of what only PostgreSQL does (its driver, its
    pool) or that need a server backend next to Redis."""
    created = await create_database("postgresql")
    yield created
    await created.drop()


@pytest_asyncio.fixture
async def empty_postgres() -> AsyncIterator[TestDatabase]:
    """A new PostgreSQL database without a schema, for a real ``goodnight serve`` to migrate."""
    created = await create_empty_database("postgresql")
    try:
        yield created
    finally:
        await created.drop()


@pytest.fixture
def services(app: FastAPI) -> Services:
    found: Services = app.state.services
    return found


@pytest_asyncio.fixture
async def client(app: FastAPI, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    await truncate(services.database.engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver/api/v1") as http:
        yield http


@pytest.fixture
def api(client: httpx.AsyncClient) -> Api:
    return Api(client)


# --- The Redis timeline: the same app with GOODNIGHT_REDIS_URL set, on a private redis-server. ---


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest_asyncio.fixture(scope="session")
async def timeline_app(database: TestDatabase, redis_server: RedisServer) -> AsyncIterator[FastAPI]:
    # Tests leave events in the outbox on purpose (read-your-writes without a worker); on a loaded machine a
    # one-second lag allowance would make the reader decline at random.
    settings = timeline_settings(database.url, redis_server.url, timeline_max_lag_seconds=300)
    async with running(settings) as application:
        yield application


@pytest.fixture
def timeline(timeline_app: FastAPI) -> AppTimeline:
    return timeline_of(timeline_app)


@pytest_asyncio.fixture
async def timeline_client(timeline_app: FastAPI, timeline: AppTimeline) -> AsyncIterator[httpx.AsyncClient]:
    await truncate(timeline_app.state.services.database.engine)
    await timeline.redis.flushall()
    timeline.reader.gate.breaker = Breaker()
    async with client_for(timeline_app) as http:
        yield http
    await timeline.reader.drain_background()


@pytest.fixture
def timeline_api(timeline_client: httpx.AsyncClient) -> Api:
    return Api(timeline_client)
