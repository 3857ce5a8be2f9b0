"""Telling a database outage apart on the Redis read path, and reporting background failures quietly.

Redis and the database can both raise ``OSError`` (asyncpg raises a bare ``ConnectionRefusedError`` when
PostgreSQL is down), so the few queries a Redis page may need are marked with ``querying()``: an outage
there sends the page to SQL (which answers 503) instead of being mistaken for a Redis failure, which would
trip the breaker and keep every warm feed off Redis until the database answered again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from goodnight.db import is_database_unavailable
from goodnight.kit.background import QUIET_SECONDS, BackgroundFailures
from goodnight.redis_client import REDIS_UNAVAILABLE


class DatabaseAway(Exception):
    """A query on the Redis read path found the database unreachable."""


@asynccontextmanager
async def querying() -> AsyncIterator[None]:
    """Database work inside a Redis page: an unreachable database raises ``DatabaseAway``."""
    try:
        yield
    except Exception as exc:
        if is_database_unavailable(exc):
            raise DatabaseAway(f"{type(exc).__name__}: {exc}") from exc
        raise


def is_unreachable(exc: BaseException) -> bool:
    """The database or Redis cannot be reached right now (an outage, not a bug)."""
    return is_database_unavailable(exc) or isinstance(exc, REDIS_UNAVAILABLE)


def background_failures(logger: logging.Logger, quiet_seconds: float = QUIET_SECONDS) -> BackgroundFailures:
    """Failure logging for the feed's background work, where Redis and the database can both be away."""
    return BackgroundFailures(logger, is_unreachable, quiet_seconds)
