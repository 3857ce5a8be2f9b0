"""Key names for the Redis timelines.

A timeline is one sorted set per reader per UTC day of clock-in, ``gn:tl:{<reader>}:<yyyymmdd>``, expiring
when every record in it has left the 7-day window: Redis frees the memory itself, no sweeper scans keys.
The ``{<reader>}`` hash tag puts all of a reader's keys in one Redis Cluster slot.

Beside the buckets, each reader has a follow-state hash ``gn:tf:{<reader>}`` (followee -> the newest follow
version applied, see ``follow_code``); each record in a timeline has its rendered feed item in
``gn:r<version>:<record>``.

A bucket's members are feed positions (``feed.position``), all with score 0, so the set's lexicographic order
is exactly the feed's ``(duration, id)`` order and a cursor is a ZRANGE BYLEX bound: an index seek, never an
offset. The window and everything derived from it here (expiry, follow-state lifetime) come from
``feed.window``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from goodnight.feed.position import ID_OFFSET
from goodnight.feed.window import WINDOW, WINDOW_DAYS

PREFIX = "gn"
# One hash tag for both, so they share a Cluster slot and can be deleted together.
CELEBRITIES = f"{PREFIX}:{{celebs}}"
# Present once the celebrity set has been (re)built from the database.
CELEBRITIES_READY = f"{PREFIX}:{{celebs}}:ready"
# Moves whenever the celebrity set or any celebrity's records change: API processes keep a snapshot of the
# celebrities' records and reload it when this moves.
CELEBRITIES_VERSION = f"{PREFIX}:{{celebs}}:v"
# A follow state outlives every timeline entry a stale writer could still add for that pair.
FOLLOW_STATE_TTL_SECONDS = (WINDOW_DAYS + 2) * 86400


def bucket_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def bucket_prefix(reader: uuid.UUID) -> str:
    return f"{PREFIX}:tl:{{{reader.hex}}}:"


def bucket_key(reader: uuid.UUID, day: date) -> str:
    return f"{bucket_prefix(reader)}{day:%Y%m%d}"


@lru_cache(maxsize=64)
def bucket_suffixes(first: date, last: date) -> tuple[str, ...]:
    """The ``yyyymmdd`` of every day from ``last`` back to ``first``, which end the day buckets' keys (cached:
    every page of the day asks for the same)."""
    return tuple(f"{last - timedelta(days=offset):%Y%m%d}" for offset in range((last - first).days + 1))


def marker_key(reader: uuid.UUID) -> str:
    """Exists while the reader's timeline is complete and kept up to date ("warm")."""
    return f"{PREFIX}:tm:{{{reader.hex}}}"


def follow_state_key(reader: uuid.UUID) -> str:
    return f"{PREFIX}:tf:{{{reader.hex}}}"


# The version of the rendered item's format. Renderings are written only if missing, so a release that
# changes what an item looks like (a field, its humanized text) bumps it: the new keys start empty, each
# timeline rebuilds on its next read (answered from SQL meanwhile), and the old keys expire with their day.
RENDERING_VERSION = 2
RENDERING_PREFIX = f"{PREFIX}:r{RENDERING_VERSION}:"


def rendering_key(record_id: uuid.UUID) -> str:
    return f"{RENDERING_PREFIX}{record_id.hex}"


def rendering_key_of(raw_member: bytes) -> str:
    """``rendering_key`` of a timeline member's record, without building a UUID."""
    return f"{RENDERING_PREFIX}{raw_member[ID_OFFSET:].hex()}"


def follow_code(version: int, active: bool) -> int:
    """One number that orders a pair's follow changes and says whether the newest one is a follow (odd)."""
    return version * 2 + int(active)


# The follow code of a deleted account, in each former follower's follow state: above any real one (versions
# count a pair's follow changes), and even (unfollowed), so nothing ever adds that author's records again.
AUTHOR_GONE = follow_code(2**51, active=False)


def rebuild_lock_key(reader: uuid.UUID) -> str:
    return f"{PREFIX}:tr:{{{reader.hex}}}"


def bucket_days(since: datetime, now: datetime) -> list[date]:
    """Every day that can hold a record clocked in between ``since`` and ``now``, newest first."""
    first, last = bucket_day(since), bucket_day(now)
    return [last - timedelta(days=offset) for offset in range((last - first).days + 1)]


def expire_at(day: date) -> int:
    """A record clocked in on ``day`` leaves the window by the start of day + 8 at the latest (the window,
    counted from the day's last moment)."""
    return int(datetime.combine(day + WINDOW + timedelta(days=1), time(), tzinfo=UTC).timestamp())
