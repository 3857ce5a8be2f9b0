"""Whether the Redis timelines may answer a page at all: not for a moment after a Redis failure (a
breaker: the feed is served from SQL meanwhile, no request waits for a timeout), and not while the outbox is
behind by more than the allowed lag (``catch_up``)."""

from __future__ import annotations

from goodnight.db import Database
from goodnight.observability import metrics
from goodnight.redis_client import Breaker
from goodnight.timeline.catch_up import CatchUp


class Gate:
    def __init__(self, database: Database, max_lag_seconds: float) -> None:
        self.breaker = Breaker()
        self.catch_up = CatchUp(database, max_lag_seconds)

    async def allows(self) -> bool:
        if not self.breaker.allows():
            metrics.feed_from_sql(metrics.BREAKER_OPEN)
            return False
        if not await self.catch_up.allows():
            metrics.feed_from_sql(metrics.LAGGING)
            return False
        return True

    def redis_failed(self) -> None:
        self.breaker.trip()
        metrics.redis_breaker_opened()
        self.catch_up.redis_failed()
