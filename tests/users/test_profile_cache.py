"""Profiles kept in each process's memory: a user's own writes show on their very next read on any process,
the memory is used, and a Redis that cannot vouch for a profile sends the read to the database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from fastapi import FastAPI

from goodnight.deps import Services
from goodnight.users.profiles import CachedProfiles, ProfileVersions
from tests.support.api import Api, Member
from tests.support.apps import client_for, running, timeline_settings
from tests.support.databases import TestDatabase
from tests.support.redis_server import RedisServer
from tests.support.statements import statements


@pytest_asyncio.fixture
async def two_processes(
    postgres_database: TestDatabase, redis_server: RedisServer
) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    """Two API processes on one database and one Redis (the test drains no outbox: writes are applied by
    their requests)."""
    settings = timeline_settings(postgres_database.url, redis_server.url, timeline_max_lag_seconds=300)
    async with running(settings) as first, running(settings) as second:
        for app in (first, second):
            # Entries live a minute here, not a second: a loaded machine can take longer than the default
            # between two reads, and these tests are about versions, not expiry (tested with its own TTL).
            services_of(app).profiles = CachedProfiles(cache_of(app).versions, ttl_seconds=60)
        yield first, second


def services_of(app: FastAPI) -> Services:
    found: Services = app.state.services
    return found


def cache_of(app: FastAPI) -> CachedProfiles:
    found = services_of(app).profiles
    assert found is not None, "an app with Redis keeps profiles"
    return found


async def profile(http: httpx.AsyncClient, who: Member, whose: str = "me") -> dict[str, object]:
    response = await http.get(f"/users/{whose}", headers=who.headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_users_writes_show_on_their_next_read_on_another_process(
    two_processes: tuple[FastAPI, FastAPI],
) -> None:
    writing, reading = two_processes
    async with client_for(writing) as on_writing, client_for(reading) as on_reading:
        api = Api(on_writing)
        me, star = await api.register(name="Before"), await api.register()
        for _ in range(2):  # the second read of each comes from memory
            assert (await profile(on_reading, me))["name"] == "Before"
            assert (await profile(on_reading, me, star.id))["followers_count"] == 0
        assert cache_of(reading).hits >= 2

        assert (await api.rename(me, "After")).status_code == 200
        assert (await profile(on_reading, me))["name"] == "After"

        await api.follow(me, star)
        assert (await profile(on_reading, me))["followings_count"] == 1
        assert (await profile(on_reading, me, star.id))["followers_count"] == 1

        await api.unfollow(me, star)
        assert (await profile(on_reading, me))["followings_count"] == 0
        assert (await profile(on_reading, me, star.id))["followers_count"] == 0


async def test_repeated_reads_come_from_memory(two_processes: tuple[FastAPI, FastAPI]) -> None:
    app, _ = two_processes
    async with client_for(app) as http:
        me = await Api(http).register()
        await profile(http, me)
        with statements(services_of(app).database.engine) as sent:
            for _ in range(5):
                await profile(http, me)
    assert sent == []


async def test_without_redis_to_vouch_for_them_profiles_are_read_from_the_database(
    postgres_database: TestDatabase,
) -> None:
    redis = RedisServer().start()
    try:
        settings = timeline_settings(postgres_database.url, redis.url, timeline_max_lag_seconds=300)
        async with running(settings) as app, client_for(app) as http:
            api = Api(http)
            me = await api.register(name="Before")
            for _ in range(2):
                await profile(http, me)
            redis.stop()
            # The bump after this write fails (and is logged); the write itself stands.
            assert (await api.rename(me, "After")).status_code == 200
            misses = cache_of(app).misses
            assert (await profile(http, me))["name"] == "After"
            assert cache_of(app).misses == misses + 1
    finally:
        redis.close()


async def test_a_write_during_a_load_leaves_the_loaded_profile_unused(redis_server: RedisServer) -> None:
    """The version is read before the load: a bump landing meanwhile makes the next read load again."""
    settings = timeline_settings("sqlite+aiosqlite://", redis_server.url)
    async with running(settings) as app:
        versions: ProfileVersions = cache_of(app).versions
        cached = CachedProfiles(versions)
        owner = uuid.uuid4()
        loads: list[int] = []

        async def load_during_a_write() -> bytes:
            loads.append(1)
            if len(loads) == 1:
                await versions.bump(owner)
            return b"{}"

        for _ in range(3):
            await cached.body(owner, load_during_a_write)
        assert len(loads) == 2


async def test_a_kept_profile_is_loaded_again_once_its_time_is_up(redis_server: RedisServer) -> None:
    """Other users' writes that bump nothing (a follower deleting their account) show within the TTL."""
    settings = timeline_settings("sqlite+aiosqlite://", redis_server.url)
    async with running(settings) as app:
        cached = CachedProfiles(cache_of(app).versions, ttl_seconds=0.05)
        owner = uuid.uuid4()
        loads: list[int] = []

        async def load() -> bytes:
            loads.append(1)
            return b"{}"

        await cached.body(owner, load)
        await cached.body(owner, load)
        await asyncio.sleep(0.1)
        await cached.body(owner, load)
        assert len(loads) == 2
