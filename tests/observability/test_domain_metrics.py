"""The series the feed, the outbox, fanout, the pool, the breaker and the rate limits record, read back
through /metrics as an operator's Prometheus would."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest_asyncio
import redis
from fastapi import FastAPI
from prometheus_client import REGISTRY

from goodnight.db import Database
from goodnight.jobs.worker import Worker
from goodnight.kit.clock import utcnow
from goodnight.observability.sampler import Sampler
from goodnight.redis_client import Breaker
from goodnight.timeline.catch_up import CatchUp
from goodnight.timeline.runtime import Timeline
from tests.support.api import Api, Member
from tests.support.apps import client_for, running, timeline_of, timeline_settings
from tests.support.databases import TestDatabase, settings_for, truncate
from tests.support.logs import app_logs
from tests.support.metrics import Samples, scrape
from tests.support.outbox import insert_events
from tests.support.processes import free_port
from tests.support.rate_limits import client_from, limited_app
from tests.support.redis_server import RedisServer
from tests.support.times import ago, iso

PAGES = "goodnight_feed_pages_total"
PROCESSED = "goodnight_outbox_processed_total"


@pytest_asyncio.fixture(scope="module")
async def app(sqlite: TestDatabase, redis_server: RedisServer) -> AsyncIterator[FastAPI]:
    with redis.Redis.from_url(redis_server.url) as connection:
        connection.flushall()
    async with running(timeline_settings(sqlite.url, redis_server.url)) as application:
        yield application


@pytest_asyncio.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    await truncate(app.state.services.database.engine)
    timeline_of(app).reader.gate.breaker = Breaker()
    async with client_for(app) as client:
        yield client


async def followed_with_a_night(api: Api, timeline: Timeline) -> tuple[Member, Member]:
    """A reader following an author, with one night of the author's fanned out to a warm timeline."""
    reader, author = await api.register(), await api.register()
    await api.follow(reader, author)
    await api.feed(reader)  # cold: rebuilt in the background
    await timeline.reader.drain_background()
    await api.feed(reader)  # the celebrity set is built on the first warm read
    await timeline.reader.drain_background()
    await api.sleep(author, iso(ago(hours=9)), iso(ago(hours=1)))
    await timeline.worker.drain()
    return reader, author


def pages(before: Samples, after: Samples, source: str, reason: str) -> float:
    return after.value(PAGES, source=source, reason=reason) - before.value(
        PAGES, source=source, reason=reason
    )


async def test_feed_pages_by_source_and_reason(app: FastAPI, http: httpx.AsyncClient) -> None:
    api, timeline = Api(http), timeline_of(app)
    newcomer = await api.register()
    before = await scrape(http)
    await api.feed(newcomer)  # never read before: cold
    await timeline.reader.drain_background()
    reader, _ = await followed_with_a_night(api, timeline)
    middle = await scrape(http)
    assert pages(before, middle, "sql", "cold") >= 2
    assert (await api.feed(reader)).json()["data"]
    assert (await api.feed(reader, start_index=1)).status_code == 200
    timeline.reader.gate.redis_failed()
    await api.feed(reader)
    timeline.reader.gate.breaker = Breaker()
    after = await scrape(http)
    assert pages(middle, after, "redis", "none") == 1
    assert pages(middle, after, "sql", "offset") == 1
    assert pages(middle, after, "sql", "breaker_open") == 1


async def test_a_lagging_outbox_sends_pages_to_sql(app: FastAPI, http: httpx.AsyncClient) -> None:
    api, timeline = Api(http), timeline_of(app)
    reader, _ = await followed_with_a_night(api, timeline)
    database = app.state.services.database
    old = utcnow() - timedelta(minutes=10)
    await insert_events(database, [{"kind": "sleep_completed", "payload": {}, "created_at": old}])
    timeline.reader.gate.catch_up = CatchUp(database, max_lag_seconds=1.0)  # checks again at once
    before = await scrape(http)
    await api.feed(reader)
    assert pages(before, await scrape(http), "sql", "lagging") == 1


async def test_without_redis_every_page_is_sql_no_redis(sqlite: TestDatabase) -> None:
    async with running(settings_for(sqlite.url)) as plain, client_for(plain) as http:
        reader = await Api(http).register()
        before = await scrape(http)
        await Api(http).feed(reader)
        assert pages(before, await scrape(http), "sql", "no_redis") == 1


async def test_outbox_outcomes_fanout_entries_and_lag(app: FastAPI, http: httpx.AsyncClient) -> None:
    api, timeline = Api(http), timeline_of(app)
    before = await scrape(http)
    await followed_with_a_night(api, timeline)
    after = await scrape(http)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert grew(PROCESSED, kind="sleep_completed", outcome="ok") == 1
    assert grew(PROCESSED, kind="followed", outcome="ok") == 1
    assert grew("goodnight_fanout_entries_total") == 1  # one active follower, one record
    assert grew("goodnight_fanout_lag_seconds_count") == 1
    assert after.value("goodnight_fanout_lag_seconds_bucket", le="300.0") == after.value(
        "goodnight_fanout_lag_seconds_count"
    )


async def test_failed_events_count_as_retry_or_dead(app: FastAPI, http: httpx.AsyncClient) -> None:
    services = app.state.services
    max_attempts = services.settings.outbox_max_attempts
    rows: list[dict[str, Any]] = [
        {"kind": "from_a_newer_release", "payload": {}},
        {"kind": "from_a_newer_release", "payload": {}, "attempts": max_attempts - 1},
    ]
    before = await scrape(http)
    await insert_events(services.database, rows)
    await timeline_of(app).worker.drain_once()

    async def redis_away(kind: str, payload: dict[str, Any]) -> None:
        raise ConnectionError("Redis is away")

    await insert_events(services.database, [{"kind": "followed", "payload": {}}])
    away = Worker(services.database, redis_away, services.settings, transient=(ConnectionError,))
    await away.drain_once()
    after = await scrape(http)
    for kind, outcome in (("other", "retry"), ("other", "dead"), ("followed", "retry")):
        labels = {"kind": kind, "outcome": outcome}
        assert after.value(PROCESSED, **labels) - before.value(PROCESSED, **labels) == 1, labels


async def test_outbox_pool_and_breaker_gauges_are_sampled(app: FastAPI, http: httpx.AsyncClient) -> None:
    services, timeline = app.state.services, timeline_of(app)
    old = utcnow() - timedelta(minutes=5)
    await insert_events(
        services.database,
        [
            {"kind": "followed", "payload": {}, "created_at": old},
            {"kind": "followed", "payload": {}, "claimed_until": utcnow() + timedelta(minutes=1)},
            {"kind": "followed", "payload": {}, "dead_at": utcnow()},
        ],
    )
    # Sampling the outbox on every round, not every ten seconds.
    sampler = Sampler(
        services.database,
        outbox=True,
        breaker_open=lambda: not timeline.reader.gate.breaker.allows(),
        outbox_every=0,
    )
    timeline.reader.gate.redis_failed()
    async with services.database.reader() as session:
        await session.connection()  # one connection checked out while sampling
        await sampler.sample()
    held = await scrape(http)
    assert held.value("goodnight_outbox_events", state="pending") == 1
    assert held.value("goodnight_outbox_events", state="in_flight") == 1
    assert held.value("goodnight_outbox_events", state="dead") == 1
    assert held.value("goodnight_outbox_oldest_pending_age_seconds") >= 300
    assert held.value("goodnight_redis_breaker_open") == 1
    assert held.value("goodnight_db_pool_connections", state="in_use") >= 1
    timeline.reader.gate.breaker = Breaker()
    await truncate(services.database.engine)
    await sampler.sample()
    released = await scrape(http)
    assert released.value("goodnight_redis_breaker_open") == 0
    assert released.value("goodnight_outbox_events", state="dead") == 0
    assert released.value("goodnight_outbox_oldest_pending_age_seconds") == 0
    assert released.value("goodnight_db_pool_connections", state="idle") >= 1


async def test_pool_overflow_counts_connections_open_beyond_the_configured_size(
    postgres_database: TestDatabase,
) -> None:
    database = Database(settings_for(postgres_database.url, database_pool_size=1))
    sampler = Sampler(database, outbox=False)

    def gauge(state: str) -> float | None:
        return REGISTRY.get_sample_value("goodnight_db_pool_connections", {"state": state})

    try:
        async with database.reader() as first, database.reader() as second:
            await first.connection()
            await second.connection()
            await sampler.sample()
            assert (gauge("in_use"), gauge("idle"), gauge("overflow")) == (2, 0, 1)
        await sampler.sample()  # given back, and kept open for the next burst
        assert (gauge("in_use"), gauge("idle"), gauge("overflow")) == (0, 2, 1)
    finally:
        await database.engine.dispose()


async def test_refusals_are_counted_by_policy(sqlite: TestDatabase) -> None:
    policies = {"rate_limit_anonymous": "1/minute", "rate_limit_login_user": "1/minute"}
    async with limited_app(sqlite.url, **policies) as limited:
        async with client_from(limited, "192.0.2.50") as setup:
            member = await Api(setup).register(f"limited{uuid.uuid4().hex[:8]}")
        before = await scrape(client_from(limited, "127.0.0.1"))
        async with client_from(limited, "198.51.100.1") as http:
            await http.get("/users/me")
            assert (await http.get("/users/me")).status_code == 429
        for address in ("198.51.100.2", "198.51.100.3"):
            async with client_from(limited, address) as http:
                await http.post("/auth/login", json={"username": member.username, "password": "wrong!"})
        after = await scrape(client_from(limited, "127.0.0.1"))
    for policy in ("anonymous", "login_user"):
        counted = "goodnight_rate_limited_total"
        assert after.value(counted, policy=policy) - before.value(counted, policy=policy) == 1, policy


async def test_an_unreachable_database_leaves_the_gauges_and_says_so_once() -> None:
    closed_port = free_port()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port}/nowhere"
    database = Database(settings_for(url, database_pool_timeout_seconds=0.5))
    sampler = Sampler(database, outbox=True, outbox_every=0)
    try:
        with app_logs() as records:
            for _ in range(3):
                await sampler.sample()  # never raises: the next round tries again
    finally:
        await database.dispose()
    warnings = [record for record in records if "could not sample the outbox" in record.getMessage()]
    assert len(warnings) == 1, [record.getMessage() for record in records]
    assert warnings[0].levelno == logging.WARNING
