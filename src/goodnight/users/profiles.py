"""Profiles served from each API process's memory, never staler than their owner's last write.

``GET /users/me`` and ``GET /users/{id}`` are a primary-key read each, yet asking the database costs several
times what the rest of the request does. Each process keeps the JSON of the profiles it served for a second.
A process cannot see another's writes, so every write that changes a profile bumps that user's version in
Redis (the follower and the followed for a follow, the user for a rename, an account's deletion), and a
cached profile is served only while its version is still the one read *before* it was loaded: one Redis
read instead of a database query. The bump runs before the write's response is sent (an ``apply_now``
handler), so whoever made a write reads it on their very next request, on any process; the outbox applies
the bump again in case that first attempt failed. Other users' writes show within a second (the
follower counts a follow changes, for instance, are bumped too).

Without Redis nothing is cached: processes would have no way to tell each other. While Redis is away, reads
go to the database.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from goodnight.jobs.events import AccountDeleted, FollowChanged, Followed, NameChanged, Unfollowed
from goodnight.jobs.handlers import Handlers
from goodnight.redis_client import REDIS_ERRORS, RedisClient

logger = logging.getLogger("goodnight.users")
# How long a profile may show other users' writes late.
TTL_SECONDS = 1.0
CAPACITY = 50_000
# A version outlives by far every cache entry that could hold it: an expired key reads as version 0, and
# an entry that old is long gone.
VERSION_TTL_MS = 600_000


def _key(user_id: uuid.UUID) -> str:
    return f"gn:pv:{{{user_id.hex}}}"


class FastReads(Protocol):
    """A Redis client for the one read of every cached profile, cheaper than redis-py's where it applies
    (the timelines' lean client)."""

    async def mget(self, names: Sequence[str | bytes]) -> list[bytes | None]: ...


class ProfileVersions:
    """A counter per user in Redis, bumped by every write that changes their profile."""

    def __init__(self, redis: RedisClient, fast: FastReads | None = None) -> None:
        self._redis = redis
        self._fast = fast

    async def bump(self, *user_ids: uuid.UUID) -> None:
        pipeline = self._redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipeline.incr(_key(user_id))
            pipeline.pexpire(_key(user_id), VERSION_TTL_MS)
        await pipeline.execute()

    async def current(self, user_id: uuid.UUID) -> int | None:
        """The user's version; None when Redis cannot say (then nothing may be served from memory)."""
        found: bytes | str | None
        try:
            if self._fast is not None:
                found = (await self._fast.mget([_key(user_id)]))[0]
            else:
                found = await self._redis.get(_key(user_id))
        except REDIS_ERRORS:
            return None
        return int(found or 0)

    def subscribe(self, handlers: Handlers) -> None:
        """Bump on the events of writes that change profiles, before their response (``now``) and again
        from the outbox (a bump is idempotent in effect: the version only has to change)."""
        handlers.on(Followed, self._follow_changed, now=self._follow_changed)
        handlers.on(Unfollowed, self._follow_changed, now=self._follow_changed)
        handlers.on(NameChanged, self._one_changed, now=self._one_changed)
        handlers.on(AccountDeleted, self._one_changed, now=self._one_changed)

    async def _follow_changed(self, event: FollowChanged) -> None:
        await self.bump(event.follower_id, event.followed_id)

    async def _one_changed(self, event: NameChanged | AccountDeleted) -> None:
        await self.bump(event.user_id)


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    body: bytes
    expires_at: float


class CachedProfiles:
    """The JSON of recently served profiles, each checked against its owner's version before use."""

    def __init__(self, versions: ProfileVersions, *, ttl_seconds: float = TTL_SECONDS) -> None:
        self.versions = versions
        self._ttl = ttl_seconds
        self._entries: OrderedDict[uuid.UUID, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def body(self, user_id: uuid.UUID, load: Callable[[], Awaitable[bytes]]) -> bytes:
        """The profile's JSON: from memory while its version is unchanged, else ``load()``-ed and kept."""
        # Read before loading: a write landing in between leaves a version that no longer matches.
        version = await self.versions.current(user_id)
        now = time.monotonic()
        entry = self._entries.get(user_id)
        if version is not None and entry is not None and entry.version == version and now < entry.expires_at:
            self.hits += 1
            return entry.body
        self.misses += 1
        body = await load()
        if version is not None:
            self._entries[user_id] = _Entry(version, body, now + self._ttl)
            self._entries.move_to_end(user_id)
            if len(self._entries) > CAPACITY:
                self._entries.popitem(last=False)
        return body
