"""Moving windows from the ``limits`` library, kept in Redis or in this process's memory.

A moving window counts the requests of the last N seconds exactly, whenever they came: a fixed window would
let twice the limit through around its boundary. Every window answers a hit with the verdict and the figures
for the ``RateLimit-*`` headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, Protocol, cast

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter
from limits.util import WindowStats
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError

from goodnight.ratelimit.verdict import Verdict, WindowState

# Every rate-limit key in Redis starts with this, so none can collide with a timeline's keys.
KEY_PREFIX = "goodnight:ratelimit"
# A cluster client waits no longer than the timeline's does for an answer that is not coming.
CLUSTER_TIMEOUTS = {"socket_timeout": 1.0, "socket_connect_timeout": 0.5}


class Windows(Protocol):
    async def hit(self, limits: Sequence[RateLimitItem], identifiers: Sequence[str]) -> Verdict:
        """Count one request against every limit; the verdict says whether all of them admitted it."""

    async def clear(self, limits: Sequence[RateLimitItem], identifiers: Sequence[str]) -> None:
        """Forget every request counted so far."""

    async def close(self) -> None: ...


class StrategyWindows:
    """Through the strategy's own API: each limit is hit, then read back for the headers."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)

    async def hit(self, limits: Sequence[RateLimitItem], identifiers: Sequence[str]) -> Verdict:
        states = []
        for item in limits:
            admitted = await self.strategy.hit(item, *identifiers)
            stats = await self.strategy.get_window_stats(item, *identifiers)
            states.append(WindowState(item.amount, admitted, stats))
        return Verdict.of(states)

    async def clear(self, limits: Sequence[RateLimitItem], identifiers: Sequence[str]) -> None:
        for item in limits:
            await self.strategy.clear(item, *identifiers)

    async def close(self) -> None:
        return None


class MemoryWindows(StrategyWindows):
    """This process only: the store without Redis, and the fallback while Redis is away."""

    def __init__(self) -> None:
        self.memory = MemoryStorage()
        super().__init__(self.memory)

    async def close(self) -> None:
        # The storage expires old entries in a background task of its own; it must not outlive the app.
        if self.memory.timer is not None:
            self.memory.timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.memory.timer


class RedisWindows(StrategyWindows):
    """One Redis server, shared by every worker and server: one round trip per request.

    The strategy's API costs two round trips per limit (one to hit, one to read the window back for the
    headers). Here both of ``limits``' own Lua scripts, for every limit of the policy, go in one pipeline
    with the same arguments ``limits`` passes them; ``tests/ratelimit/test_rate_limits.py`` checks that the
    strategy reads back exactly what this wrote, so a change in ``limits`` cannot slip by.
    """

    def __init__(self, client: Redis) -> None:
        self.client = client
        # limits' own client for the strategy's calls, on this client's connections.
        pool: Any = client.connection_pool
        super().__init__(
            RedisStorage(
                "async+redis://", implementation="redispy", key_prefix=KEY_PREFIX, connection_pool=pool
            )
        )
        self.bridge = cast(RedispyBridge, cast(RedisStorage, self.storage).bridge)

    async def hit(self, limits: Sequence[RateLimitItem], identifiers: Sequence[str]) -> Verdict:
        now = time.time()
        acquire, window = self.bridge.lua_acquire_moving_window.sha, self.bridge.lua_moving_window.sha
        commands: list[tuple[Any, ...]] = []
        for item in limits:
            key, expiry = self.bridge.prefixed_key(item.key_for(*identifiers)), item.get_expiry()
            commands.append(("EVALSHA", acquire, 1, key, now, item.amount, expiry, 1))
            commands.append(("EVALSHA", window, 1, key, now - expiry, item.amount))
        replies = await self._execute(commands)
        states = []
        for index, item in enumerate(limits):
            acquired, entries = replies[2 * index], replies[2 * index + 1]
            # As MovingWindowRateLimiter.get_window_stats reads it: (oldest entry, entries) or nothing.
            oldest, count = (float(entries[0]), int(entries[1])) if entries else (now, 0)
            stats = WindowStats(oldest + item.get_expiry(), item.amount - count)
            states.append(WindowState(item.amount, bool(acquired), stats))
        return Verdict.of(states)

    async def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        try:
            return await self._send(commands)
        except NoScriptError:
            # A Redis that restarted has forgotten the scripts: load them and send the pipeline again.
            for script in (self.bridge.lua_acquire_moving_window, self.bridge.lua_moving_window):
                await self.client.script_load(script.script)
            return await self._send(commands)

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute()
        return replies

    async def close(self) -> None:
        await self.client.aclose()


class RedisClusterWindows(StrategyWindows):
    """A Redis Cluster, through the strategy's API: redis-py refuses Lua scripts in a cluster pipeline, so
    a limit costs two round trips here."""

    def __init__(self, url: str) -> None:
        scheme, _, rest = url.partition("://")
        options: dict[str, Any] = {**CLUSTER_TIMEOUTS, "ssl": scheme == "rediss"}
        storage = RedisClusterStorage(
            f"async+redis+cluster://{rest}", implementation="redispy", key_prefix=KEY_PREFIX, **options
        )
        self.client = cast(RedisCluster, cast(RedispyBridge, storage.bridge).get_connection())
        super().__init__(storage)

    async def close(self) -> None:
        await self.client.aclose()
