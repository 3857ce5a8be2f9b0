"""Telling a database outage apart on the Redis read path, and reporting background failures quietly.

Redis and the database can both raise ``OSError`` (asyncpg raises a bare ``ConnectionRefusedError`` when
PostgreSQL is down), so the few queries a Redis page may need are marked with ``querying()``: an outage
there sends the page to SQL (which answers 503) instead of being mistaken for a Redis failure, which would
trip the breaker and keep every warm feed off Redis until the database answered again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from goodnight.db import is_database_unavailable
from goodnight.timeline.redis_client import REDIS_UNAVAILABLE

# An outage fails every background attempt while it lasts; one line per this many seconds says enough.
QUIET_SECONDS = 60.0


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


class BackgroundFailures:
    """Logs failed background work: a bug with its traceback every time; an unreachable database or Redis
    as one warning line at most once per ``QUIET_SECONDS`` (reads keep spawning work that fails the same
    way, and a traceback per request would bury everything else in the log)."""

    def __init__(self, logger: logging.Logger, quiet_seconds: float = QUIET_SECONDS) -> None:
        self._logger = logger
        self._quiet_seconds = quiet_seconds
        self._quiet_until = 0.0

    def report(self, exc: BaseException, message: str, *args: object) -> None:
        if not is_unreachable(exc):
            self._logger.error(message, *args, exc_info=exc)
            return
        now = time.monotonic()
        if now < self._quiet_until:
            return
        self._quiet_until = now + self._quiet_seconds
        self._logger.warning(
            f"{message}: %s: %s (a service is unreachable; such failures are not logged again for %.0f s)",
            *args,
            type(exc).__name__,
            exc,
            self._quiet_seconds,
        )
