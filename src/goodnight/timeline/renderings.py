"""Each record's rendered feed item, stored once however many timelines hold it.

A deleted record's rendering is overwritten with a tombstone, which renderings written later never replace
(``SET NX``), so a page skips it however many stale entries still point at it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date

from goodnight.feed.render import TOMBSTONE
from goodnight.redis_client import RedisClient
from goodnight.timeline import keys
from goodnight.timeline.scripts import Scripts

Rendering = tuple[uuid.UUID, date, bytes]  # (record, bucket day, stored rendering)


class Renderings:
    def __init__(self, redis: RedisClient, scripts: Scripts) -> None:
        self.redis = redis
        self.scripts = scripts

    async def put(self, renderings: Sequence[Rendering]) -> None:
        """Store renderings that are not there yet; ``NX`` never replaces one, nor a deleted record's
        tombstone."""
        if not renderings:
            return
        pipe = self.redis.pipeline(transaction=False)
        for record_id, day, rendering in renderings:
            pipe.set(keys.rendering_key(record_id), rendering, nx=True, exat=keys.expire_at(day))
        await pipe.execute()

    async def rerender(self, renderings: Sequence[Rendering], *, now: float) -> None:
        """Replace renderings (their author was renamed), but never a deleted record's tombstone. Those whose
        day has left every window (``now``, epoch seconds) are skipped: no page can reach them."""
        calls = [
            ([keys.rendering_key(record_id)], [rendering, keys.expire_at(day)])
            for record_id, day, rendering in renderings
            if keys.expire_at(day) > now
        ]
        if calls:
            await self.scripts.run_many(self.scripts.rerender, calls)

    async def tombstone(self, records: Iterable[tuple[uuid.UUID, date]]) -> None:
        """Deleted records (id, bucket day): each rendering becomes a tombstone, hiding the record from every
        page at once. That includes a celebrity's records still in the API processes' snapshots: pages fetch
        the renderings of celebrity records too, so the snapshots need no reload (which would cost every
        process a query)."""
        gone = list(records)
        if not gone:
            return
        pipe = self.redis.pipeline(transaction=False)
        for record_id, day in gone:
            pipe.set(keys.rendering_key(record_id), TOMBSTONE, exat=keys.expire_at(day))
        await pipe.execute()
