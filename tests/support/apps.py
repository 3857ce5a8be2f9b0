"""Building and running the app under test: settings for the Redis timeline, lifespan, in-process client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from fastapi import FastAPI

from goodnight.config import Settings
from goodnight.deps import Services
from goodnight.jobs.handlers import Handlers
from goodnight.jobs.worker import Worker
from goodnight.main import create_app
from goodnight.redis_client import RedisClient
from goodnight.timeline.fanout import Fanout
from goodnight.timeline.reader import TimelineReader
from goodnight.timeline.store import TimelineStore
from tests.support.databases import settings_for

if TYPE_CHECKING:
    from goodnight.observability.tracing import Tracing

# Low, so a handful of followers makes a celebrity.
CELEBRITY_THRESHOLD = 3
BASE_URL = "http://testserver/api/v1"


def timeline_settings(database_url: str, redis_url: str, **overrides: object) -> Settings:
    """The app with a Redis timeline and no embedded worker: tests drain the outbox themselves, so every
    step is deterministic."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "celebrity_threshold": CELEBRITY_THRESHOLD,
        "embedded_worker": False,
        # A loaded test machine can take longer than the default half second to open a local connection,
        # which would send pages that a test expects from Redis to SQL. A stopped Redis refuses at once, and
        # a paused one still accepts (then its replies time out): neither waits for this.
        "redis_connect_timeout_seconds": 5.0,
    }
    values.update(overrides)
    return settings_for(database_url, **values)


@contextlib.asynccontextmanager
async def running(settings: Settings, *, tracing: Tracing | None = None) -> AsyncIterator[FastAPI]:
    """The app with its lifespan entered (engine, Redis, workers), as a server would run it."""
    app = create_app(settings, tracing=tracing)
    async with app.router.lifespan_context(app):
        yield app


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


@dataclass(frozen=True)
class AppTimeline:
    """An app's Redis timelines as tests drive them, with the outbox machinery that feeds them: tests drain
    the outbox themselves (``worker.drain()``) and apply a stored event by hand (``handlers.dispatch``)."""

    redis: RedisClient
    store: TimelineStore
    fanout: Fanout
    reader: TimelineReader
    worker: Worker
    handlers: Handlers


def timeline_of(app: FastAPI) -> AppTimeline:
    services: Services = app.state.services
    found = services.timeline
    assert found is not None, "the app was built without GOODNIGHT_REDIS_URL"
    jobs = services.jobs
    return AppTimeline(found.redis, found.store, found.fanout, found.reader, jobs.worker, jobs.handlers)
