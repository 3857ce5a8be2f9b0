"""The celebrity set: users whose records are merged into feeds at read time instead of fanned out.

Its version moves whenever the set or any celebrity's records change: API processes keep a snapshot of the
celebrities' records and reload it when the version moves.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from typing import Any

from goodnight.redis_client import RedisClient
from goodnight.timeline import keys


def _ensure_version(pipe: Any) -> None:
    """A version Redis has lost restarts at a random value, never at one an API process may still hold
    from an earlier life of this Redis."""
    pipe.set(keys.CELEBRITIES_VERSION, secrets.randbelow(2**62), nx=True)


def _bump_version(pipe: Any) -> None:
    _ensure_version(pipe)
    pipe.incr(keys.CELEBRITIES_VERSION)


class CelebritySet:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def version(self) -> bytes:
        """The current version of the celebrities and their records (created, at a random value that no
        earlier life of this Redis had, if Redis has lost it)."""
        pipe = self.redis.pipeline(transaction=False)
        _ensure_version(pipe)
        pipe.get(keys.CELEBRITIES_VERSION)
        _, version = await pipe.execute()
        assert isinstance(version, bytes)  # just set, if it was missing
        return version

    async def members(self) -> set[uuid.UUID] | None:
        """The celebrity set, or None when it must be rebuilt (Redis lost it)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(keys.CELEBRITIES_READY)
        pipe.smembers(keys.CELEBRITIES)
        ready, members = await pipe.execute()
        if not ready:
            return None
        return {uuid.UUID(bytes=raw) for raw in members}

    async def contains(self, user_id: uuid.UUID) -> bool:
        return bool(await self.redis.sismember(keys.CELEBRITIES, user_id.bytes))  # type: ignore[arg-type]

    async def changed(self, user_id: uuid.UUID) -> None:
        """A celebrity (new or not) has a new record: make sure it is in the set, and move the version."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(keys.CELEBRITIES, user_id.bytes)
        await self._apply(pipe)

    async def remove(self, user_id: uuid.UUID) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.srem(keys.CELEBRITIES, user_id.bytes)
        await self._apply(pipe)

    async def forget(self) -> None:
        """Drop the set (bulk loading only: anywhere else members must be removed by backfill)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(keys.CELEBRITIES_READY, keys.CELEBRITIES)
        await self._apply(pipe)

    async def load(self, user_ids: Iterable[uuid.UUID]) -> None:
        """Add everyone given and mark the set ready (rebuilt from the database)."""
        members = [user_id.bytes for user_id in user_ids]
        pipe = self.redis.pipeline(transaction=False)
        if members:
            pipe.sadd(keys.CELEBRITIES, *members)
        pipe.set(keys.CELEBRITIES_READY, b"1")
        await self._apply(pipe)

    @staticmethod
    async def _apply(pipe: Any) -> None:
        _bump_version(pipe)  # last: a snapshot taken at the new version sees the change
        await pipe.execute()
