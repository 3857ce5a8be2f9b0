"""Fixtures: the app on SQLite, PostgreSQL and MariaDB, one throwaway database each per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from goodnight.deps import Services
from goodnight.main import create_app
from tests.support.api import Api
from tests.support.databases import BACKENDS, TestDatabase, create_database, settings_for, truncate


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
