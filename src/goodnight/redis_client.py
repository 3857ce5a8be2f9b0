"""Connecting to Redis (single node or Cluster), and failing fast while it is away: shared by everything that
uses Redis (the timelines, the rate limits, the seed)."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Connection, Redis, RedisCluster
from redis.connection import HiredisRespSerializer
from redis.exceptions import ClusterDownError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from goodnight.config import Settings

RedisClient = Redis | RedisCluster
# Anything a Redis call can raise when the server is slow, gone, flushed mid-operation or re-sharding.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
# The subset that means "Redis is away", as opposed to a command Redis refused (a bug, not an outage).
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    OSError,
    TimeoutError,
)


class HiredisPackingConnection(Connection):
    """A TCP connection that packs commands with hiredis (C), as redis-py's synchronous client already does;
    its asyncio client packs in Python, argument by argument, which was a visible share of a feed page."""

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


def connect(settings: Settings) -> RedisClient:
    assert settings.redis_url is not None
    url = settings.redis_url
    timeouts: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout_seconds,
        "socket_connect_timeout": settings.redis_connect_timeout_seconds,
    }
    if settings.redis_cluster:
        return RedisCluster.from_url(url, **timeouts)
    options: dict[str, Any] = {}
    if url.startswith("redis://"):  # rediss:// and unix:// keep the connection class their scheme needs
        options["connection_class"] = HiredisPackingConnection
    return Redis.from_url(url, health_check_interval=15, **timeouts, **options)


class Breaker:
    """After a Redis failure, readers skip Redis for a moment (serving from SQL) instead of each one waiting
    for a connect timeout; the next attempt after the cool-down finds out whether it is back."""

    def __init__(self, cooldown_seconds: float = 1.0) -> None:
        self._cooldown = cooldown_seconds
        self._closed_until = 0.0

    def allows(self) -> bool:
        return time.monotonic() >= self._closed_until

    def trip(self) -> None:
        self._closed_until = time.monotonic() + self._cooldown
