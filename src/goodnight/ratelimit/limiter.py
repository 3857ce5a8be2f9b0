"""The policies on their windows: in Redis when ``GOODNIGHT_REDIS_URL`` is set, so every worker and server
shares one count; in this process's memory otherwise.

While Redis is away, limits are counted in memory instead: never "unlimited", and never an error for the
client. Counting per process is weaker (each process admits the full limit) but keeps every abuse limit in
force. A breaker keeps requests from waiting on a dead Redis; after its cool-down the next request tries
Redis again, and limits go back to it as soon as it answers.
"""

from __future__ import annotations

import contextlib
import logging

from redis.asyncio import Redis

from goodnight.config import Settings
from goodnight.errors import RateLimited
from goodnight.observability import metrics
from goodnight.ratelimit.client_ip import ClientAddress, parse_networks
from goodnight.ratelimit.policies import Policies, Policy
from goodnight.ratelimit.verdict import UNLIMITED, Verdict
from goodnight.ratelimit.windows import MemoryWindows, RedisClusterWindows, RedisWindows, Windows
from goodnight.redis_client import REDIS_ERRORS, Breaker, connect

logger = logging.getLogger("goodnight.ratelimit")


class RateLimiter:
    def __init__(
        self,
        policies: Policies,
        client_address: ClientAddress,
        shared: Windows | None = None,
        *,
        enabled: bool = True,
    ) -> None:
        self.policies = policies
        self.client_address = client_address
        self.enabled = enabled
        self._shared = shared
        self._memory = MemoryWindows()
        self._breaker = Breaker()
        self._on_memory = False
        # For operators and metrics: Redis failures seen, and requests counted in memory because of them.
        self.redis_failures = 0
        self.memory_fallbacks = 0

    @classmethod
    def build(cls, settings: Settings) -> RateLimiter:
        shared: Windows | None = None
        if settings.rate_limits and settings.redis_url:
            if settings.redis_cluster:
                shared = RedisClusterWindows(settings.redis_url)
            else:
                client = connect(settings)
                assert isinstance(client, Redis)  # a single server, as redis_cluster is off
                shared = RedisWindows(client)
        return cls(
            Policies.from_settings(settings),
            ClientAddress(parse_networks(settings.trusted_proxy_list)),
            shared,
            enabled=settings.rate_limits,
        )

    async def hit(self, policy: Policy, key: str) -> Verdict:
        """Count one request against ``policy`` for ``key`` (an address, a user id, a username)."""
        if not self.enabled:
            return UNLIMITED
        identifiers = (policy.name, key)
        if self._shared is not None:
            if self._breaker.allows():
                try:
                    verdict = await self._shared.hit(policy.limits, identifiers)
                except REDIS_ERRORS as exc:
                    self._redis_failed(exc)
                else:
                    self._redis_answered()
                    return verdict
            self.memory_fallbacks += 1
        return await self._memory.hit(policy.limits, identifiers)

    async def clear(self, policy: Policy, key: str) -> None:
        if not self.enabled:
            return
        identifiers = (policy.name, key)
        await self._memory.clear(policy.limits, identifiers)
        if self._shared is not None and self._breaker.allows():
            try:
                await self._shared.clear(policy.limits, identifiers)
            except REDIS_ERRORS as exc:
                self._redis_failed(exc)

    async def start_login_attempt(self, username: str) -> None:
        """Count a login attempt against its username, across all addresses, before the password is checked.

        A username over its limit is refused here, before it costs a password hash, with the very answer an
        address over its limit gets. Counting at the start, not after a failure, means a burst of guesses
        sent at once cannot all slip in while their hashes run; ``login_succeeded`` wipes the count, so in
        the end only failed attempts stay counted.
        """
        verdict = await self.hit(self.policies.login_user, _username_key(username))
        if not verdict.allowed:
            metrics.rate_limited(self.policies.login_user.name)
            raise RateLimited(headers=verdict.header_dict())

    async def login_succeeded(self, username: str) -> None:
        await self.clear(self.policies.login_user, _username_key(username))

    async def close(self) -> None:
        await self._memory.close()
        if self._shared is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._shared.close()

    def _redis_failed(self, exc: BaseException) -> None:
        self.redis_failures += 1
        self._breaker.trip()
        if not self._on_memory:
            self._on_memory = True
            logger.warning("rate limits counted in process memory: Redis failed (%s)", type(exc).__name__)

    def _redis_answered(self) -> None:
        if self._on_memory:
            self._on_memory = False
            logger.info("rate limits counted in Redis again")


def _username_key(username: str) -> str:
    return username.lower()
