"""Where each user's latest write sits in the primary's replication stream (``replication``: a WAL position
on PostgreSQL, a GTID sequence number on MariaDB), remembered across processes.

A position only matters while some healthy replica could still be behind it. A replica is healthy while it
lags less than ``max_lag`` behind the primary's sampled positions, so a position older than that plus two
samples can no longer send anyone to the primary: it expires (in Redis, by TTL) and costs nothing.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import OrderedDict

from goodnight.redis_client import REDIS_ERRORS, RedisClient

logger = logging.getLogger("goodnight.replicas")
# Positions this process remembers by itself (the last writers it served), besides Redis.
LOCAL_CAPACITY = 10_000


def _key(user_id: uuid.UUID) -> str:
    return f"gn:rw:{{{user_id.hex}}}"


class WritePositions:
    """Each user's latest write position: in this process, and in Redis (when configured) for the others.

    ``required`` answers None when it cannot know (Redis away): the caller then reads from the primary,
    which is always right.
    """

    def __init__(self, redis: RedisClient | None, *, ttl_seconds: float) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._ttl_ms = math.ceil(ttl_seconds * 1000)
        self._local: OrderedDict[uuid.UUID, tuple[int, float]] = OrderedDict()

    async def remember(self, user_id: uuid.UUID, position: int) -> None:
        self._local[user_id] = (position, time.monotonic() + self._ttl)
        self._local.move_to_end(user_id)
        while len(self._local) > LOCAL_CAPACITY:
            self._local.popitem(last=False)
        if self._redis is None:
            return
        try:
            # Two processes may record one user's writes out of order: a one-member sorted set keeps the
            # larger position (ZADD GT), which a plain SET would not. One round trip for both commands.
            pipeline = self._redis.pipeline(transaction=False)
            pipeline.zadd(_key(user_id), {"lsn": position}, gt=True)
            pipeline.pexpire(_key(user_id), self._ttl_ms)
            await pipeline.execute()
        except REDIS_ERRORS:
            logger.warning("could not share a write position through Redis; other processes read the primary")

    async def required(self, user_id: uuid.UUID) -> int | None:
        """The position a replica must have replayed to serve this user; 0 when nothing is pending."""
        local = self._local.get(user_id)
        position = local[0] if local is not None and local[1] > time.monotonic() else 0
        if self._redis is None:
            return position
        try:
            shared = await self._redis.zscore(_key(user_id), "lsn")
        except REDIS_ERRORS:
            return None
        return max(position, int(shared or 0))
