"""What the seeded dataset occupies, read before any load touches it: PostgreSQL bytes per table (heap,
indexes, TOAST) per row, Redis bytes per timeline entry, per rendering and per follow state, and how many
timelines a clock-out is fanned out to.

These are the figures storage and memory are planned from (``bench/capacity.py``). PostgreSQL sizes come
from ``pg_total_relation_size``; Redis sizes from ``MEMORY USAGE`` on a sample of each kind of key, set
against ``INFO memory`` for the whole dataset.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis

from gnbench.infra import Postgres

# The tables whose size grows with users, follows and nights (alembic_version and the like are left out).
TABLES = ("users", "follows", "sleep_records", "outbox", "token_revocations")
SAMPLE_KEYS = 2000  # per kind of Redis key

# Redis key prefixes (goodnight.timeline.keys) and what each key's size is divided by.
KINDS: dict[bytes, tuple[str, str | None]] = {
    b"gn:tl:": ("timeline_bucket", "ZCARD"),  # per entry
    b"gn:r": ("rendering", None),  # per key
    b"gn:tf:": ("follow_state", "HLEN"),  # per followee
    b"gn:tm:": ("warm_marker", None),
}


def postgres_sizes(postgres: Postgres, database: str) -> dict[str, Any]:
    """Per table: rows, heap + TOAST bytes, index bytes, and the total per row."""
    tables: dict[str, Any] = {}
    for table in TABLES:
        found = postgres.rows(
            "SELECT pg_relation_size(c.oid) + coalesce(pg_total_relation_size(c.reltoastrelid), 0), "
            "pg_indexes_size(c.oid), pg_total_relation_size(c.oid) "
            "FROM pg_class c WHERE c.oid = to_regclass(:'name')",
            database,
            name=table,
        )
        if not found:
            continue
        heap, indexes, total = (int(value) for value in found[0])
        rows = int(postgres.psql(f'SELECT count(*) FROM "{table}"', database))  # noqa: S608  (our names)
        tables[table] = {
            "rows": rows,
            "heap_bytes": heap,
            "index_bytes": indexes,
            "total_bytes": total,
            "bytes_per_row": round(total / rows, 1) if rows else None,
        }
    database_bytes = int(postgres.psql("SELECT pg_database_size(current_database())", database))
    return {"tables": tables, "database_bytes": database_bytes}


def redis_sizes(url: str) -> dict[str, Any]:
    """Key counts by kind (one SCAN over everything), and bytes per entry/key from a sample of each kind."""
    client = redis.Redis.from_url(url)
    try:
        counts: Counter[str] = Counter()
        samples: dict[str, list[bytes]] = {kind: [] for kind, _ in KINDS.values()}
        for key in client.scan_iter(count=10_000):
            kind = _kind(key)
            counts[kind] += 1
            if kind in samples and len(samples[kind]) < SAMPLE_KEYS:
                samples[kind].append(key)
        kinds = {kind: _sampled(client, kind, found, counts[kind]) for kind, found in samples.items()}
        memory = client.info("memory")
    finally:
        client.close()
    estimated = sum(part["estimated_bytes"] for part in kinds.values())
    return {
        "keys": dict(counts),
        "kinds": kinds,
        "used_memory": int(memory["used_memory"]),
        "used_memory_dataset": int(memory["used_memory_dataset"]),
        "used_memory_rss": int(memory["used_memory_rss"]),
        # MEMORY USAGE leaves out the keyspace's own tables and the allocator's rounding: this factor takes
        # the sampled per-key figures up to what the server really holds.
        "overhead_factor": round(int(memory["used_memory"]) / estimated, 3) if estimated else None,
    }


def _kind(key: bytes) -> str:
    for prefix, (kind, _) in KINDS.items():
        if key.startswith(prefix):
            return kind
    return "other"


def _sampled(client: redis.Redis, kind: str, found: list[bytes], count: int) -> dict[str, Any]:
    per = dict(KINDS.values())[kind]
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.memory_usage(key, samples=0)
        if per == "ZCARD":
            pipe.zcard(key)
        elif per == "HLEN":
            pipe.hlen(key)
    answers = pipe.execute() if found else []
    width = 2 if per is not None else 1
    sizes = [int(answer or 0) for answer in answers[0::width]]
    units = [int(answer or 0) for answer in answers[1::width]] if per is not None else [1] * len(sizes)
    total_units = sum(units)
    per_unit = sum(sizes) / total_units if total_units else 0.0
    per_key = sum(sizes) / len(sizes) if sizes else 0.0
    units_per_key = total_units / len(sizes) if sizes else 0.0
    return {
        "sampled": len(sizes),
        "bytes_per_key": round(per_key, 1),
        "units_per_key": round(units_per_key, 2),
        "bytes_per_unit": round(per_unit, 1),
        "unit": {"ZCARD": "entry", "HLEN": "followee"}.get(per or "", "key"),
        "estimated_bytes": round(per_key * count),
        "estimated_units": round(units_per_key * count),
    }


def fanout_reach(postgres: Postgres, database: str, threshold: int, active_days: int) -> dict[str, Any]:
    """Timelines each of the last day's clock-outs reaches, as the outbox worker would fan it out: the
    author's followers active within ``active_days``, and nobody for a celebrity (read-time merge)."""
    row = postgres.rows(
        "WITH now_utc AS (SELECT now() AT TIME ZONE 'UTC' AS t), "
        "outs AS (SELECT r.user_id, count(*) AS nights FROM sleep_records r, now_utc "
        "  WHERE r.clocked_out_at IS NOT NULL AND r.clocked_out_at >= now_utc.t - interval '1 day' "
        "  GROUP BY r.user_id) "
        "SELECT sum(o.nights), "
        "  sum(o.nights * CASE WHEN u.followers_count > :threshold THEN 0 ELSE ("
        "    SELECT count(*) FROM follows f JOIN users reader ON reader.id = f.follower_id, now_utc "
        "    WHERE f.followed_id = o.user_id AND f.active "
        "    AND reader.last_active_at >= now_utc.t - make_interval(days => :days)) END), "
        "  sum(o.nights * u.followers_count), "
        "  sum(o.nights) FILTER (WHERE u.followers_count > :threshold) "
        "FROM outs o JOIN users u ON u.id = o.user_id",
        database,
        threshold=threshold,
        days=active_days,
    )[0]
    clock_outs, entries, followers, celebrity = (int(value or 0) for value in row)
    return {
        "clock_outs_last_day": clock_outs,
        "entries_per_clock_out": round(entries / clock_outs, 2) if clock_outs else 0.0,
        "followers_per_clock_out": round(followers / clock_outs, 2) if clock_outs else 0.0,
        "celebrity_clock_outs": celebrity,
    }
