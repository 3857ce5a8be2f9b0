"""Redis operations on timelines, one part per kind of key. Every write is idempotent, so outbox
redelivery is harmless.

What a page read from Redis may trust, and what keeps it true without asking the database:
* a reader's buckets only ever receive a followee's records through scripts that consult the reader's
  follow state in the same atomic step (``buckets``): no writer holding an older read of the follow graph
  can put an unfollowed user's records back;
* a deleted record's rendering is a tombstone that renderings written later never replace (``renderings``),
  so a page skips it however many stale entries still point at it.
"""

from __future__ import annotations

from goodnight.redis_client import RedisClient
from goodnight.timeline.buckets import Buckets
from goodnight.timeline.celebrities import CelebritySet
from goodnight.timeline.lean_redis import LeanRedis
from goodnight.timeline.pages import Pages
from goodnight.timeline.renderings import Renderings
from goodnight.timeline.scripts import Scripts


class TimelineStore:
    def __init__(self, redis: RedisClient, lean: LeanRedis | None = None) -> None:
        """``lean``, when given, serves the feed page's two reads (``pages``); redis-py serves the rest."""
        self.redis = redis
        scripts = Scripts(redis)
        self.buckets = Buckets(redis, scripts)
        self.pages = Pages(redis, lean)
        self.renderings = Renderings(redis, scripts)
        self.celebrities = CelebritySet(redis)
