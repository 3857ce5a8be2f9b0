"""What finding people and revoking tokens cost, on a throwaway PostgreSQL database of N users.

    scripts/uv run --frozen python bench/account_probe.py --users 1000000

1. Fills ``users`` with N users straight in SQL (names of 5-13 random characters of [a-z0-9_] plus a unique
   number), gives one viewer 500 followings, ANALYZEs.
2. Times a page of people (the repository query the route runs, with ``followed_by_me``) for random one- to
   three-character prefixes, first pages and pages deep behind a cursor; prints EXPLAIN ANALYZE of one.
3. Times one revocation poll (the query every process runs twice a second) over 100,000 revocation rows.
4. Times ``Tokens.verify`` on a cached token with no revocations and with 100,000 in memory, and the memory
   those take.

The database is dropped afterwards. Point ``--admin-url`` at another server to measure there.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import resource
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from goodnight.auth import repository as revocations
from goodnight.auth.revocation import Revocation, RevocationList
from goodnight.auth.tokens import Tokens
from goodnight.config import Settings
from goodnight.db import Database
from goodnight.migrate import upgrade_to_head
from goodnight.users import repository as users
from goodnight.users.search import upper_bound

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"
REVOCATIONS = 100_000
PROBE_SECRET = "probe-secret-0123456789-abcdefghijklmnopqrstuvwxyz"  # noqa: S105  (a throwaway database)
FILL_USERS = """
INSERT INTO users (id, username, username_key, password_hash, followers_count, followings_count,
                   last_active_at, created_at, updated_at)
SELECT gen_random_uuid(), name, name, 'x', 0, 0, now(), now(), now()
FROM (
    SELECT translate(lower(substr(encode(sha256(i::text::bytea), 'base64'), 1, 5 + i % 9)), '+/', '_0')
           || i::text AS name
    FROM generate_series(1, :count) AS i
) AS generated
"""
FILL_FOLLOWS = """
INSERT INTO follows (follower_id, followed_id, active, followed_at, created_at, updated_at, version)
SELECT :viewer, id, true, now(), now(), now(), 1 FROM users WHERE id <> :viewer ORDER BY random() LIMIT 500
"""
FILL_REVOCATIONS = """
INSERT INTO token_revocations (user_id, token_id, expires_at, created_at)
SELECT gen_random_uuid(), md5(i::text), now() + interval '1 hour', now() FROM generate_series(1, :count) AS i
"""


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    cut = statistics.quantiles(ordered, n=100)
    return f"p50 {cut[49]:.2f}  p95 {cut[94]:.2f}  p99 {cut[98]:.2f}  max {ordered[-1]:.2f} ms"


async def timed(runs: int, work: Callable[[], Awaitable[object]]) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def create_database(admin_url: str) -> str:
    name = f"goodnight_probe_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(admin_url: str, url: str) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    await engine.dispose()


async def fill(database: Database, count: int) -> uuid.UUID:
    started = time.perf_counter()
    async with database.engine.begin() as connection:
        await connection.execute(sa.text(FILL_USERS), {"count": count})
        viewer = (await connection.execute(sa.text("SELECT id FROM users LIMIT 1"))).scalar_one()
        await connection.execute(sa.text(FILL_FOLLOWS), {"viewer": viewer})
        await connection.execute(sa.text(FILL_REVOCATIONS), {"count": REVOCATIONS})
    async with database.engine.connect() as connection:
        await connection.execute(sa.text("ANALYZE"))
        await connection.commit()
    took = time.perf_counter() - started
    print(f"filled {count:,} users, 500 follows, {REVOCATIONS:,} revocations in {took:.1f}s")
    return viewer


async def probe_search(database: Database, viewer: uuid.UUID, runs: int) -> None:
    rng = random.Random(1)  # noqa: S311  (reproducible prefixes)

    async def first_page(length: int) -> None:
        prefix = "".join(rng.choice(ALPHABET) for _ in range(length))
        async with database.reader() as session:
            await users.find_by_key_range(
                session, viewer, lowest=prefix, below=upper_bound(prefix), after=None, limit=20
            )

    async def deep_page() -> None:
        prefix = rng.choice(ALPHABET)
        after = prefix + "".join(rng.choice(ALPHABET) for _ in range(3))
        async with database.reader() as session:
            await users.find_by_key_range(
                session, viewer, lowest=prefix, below=upper_bound(prefix), after=after, limit=20
            )

    for length in (1, 2, 3):

        async def page(length: int = length) -> None:
            await first_page(length)

        await timed(20, page)  # warm the cache and the connection
        print(f"search, {length}-character prefix, first page of 20: {percentiles(await timed(runs, page))}")
    print(f"search, a page deep behind a cursor:           {percentiles(await timed(runs, deep_page))}")
    async with database.engine.connect() as connection:
        plan = await connection.execute(
            sa.text(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT users.*, follows.follower_id FROM users "
                "LEFT OUTER JOIN follows ON follows.follower_id = :viewer AND follows.followed_id = users.id "
                "AND follows.active IS true WHERE users.username_key >= 'ab' AND users.username_key < 'ac' "
                "ORDER BY users.username_key LIMIT 21"
            ),
            {"viewer": viewer},
        )
        print("\n".join(row[0] for row in plan))


async def probe_poll(database: Database, runs: int) -> None:
    async with database.reader() as session:
        newest = await revocations.newest_id(session)

    async def poll() -> None:
        async with database.reader() as session:
            await revocations.after(session, newest, [])

    await timed(20, poll)
    print(f"revocation poll over {REVOCATIONS:,} rows (nothing new): {percentiles(await timed(runs, poll))}")


def per_call_ns(tokens: Tokens, token: str, calls: int = 200_000) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        tokens.verify(token)
    return (time.perf_counter_ns() - started) / calls


def probe_verify() -> None:
    """The same cached token against an empty list and a full one, alternately (the machine is noisy)."""
    empty, full = RevocationList(loaded=True), RevocationList(loaded=True)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    expires = (datetime.now(UTC) + timedelta(hours=1)).timestamp()
    for index in range(REVOCATIONS):
        user = uuid.uuid4()
        full.add(Revocation(user, uuid.uuid4().hex, None, expires))
        if index % 10 == 0:  # a password change for one user in ten
            full.add(Revocation(user, None, int(time.time() * 1000), expires))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    checkers = {"none": Tokens(PROBE_SECRET, 7200, empty), f"{len(full):,}": Tokens(PROBE_SECRET, 7200, full)}
    token = next(iter(checkers.values())).issue(uuid.uuid4()).token
    best = dict.fromkeys(checkers, float("inf"))
    for _ in range(5):
        for label, tokens in checkers.items():
            tokens.verify(token)  # decoded once, cached from then on
            best[label] = min(best[label], per_call_ns(tokens, token))
    figures = ", ".join(f"{best[label]:.0f} ns with {label} revoked" for label in checkers)
    print(f"Tokens.verify, cached token: {figures}")
    print(f"memory for {len(full):,} revocations: about {grown / 1024:.0f} MiB (peak RSS growth)")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--admin-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    url = await create_database(args.admin_url)
    try:
        settings = Settings(database_url=url, jwt_secret=PROBE_SECRET)
        await upgrade_to_head(settings)
        database = Database(settings)
        try:
            viewer = await fill(database, args.users)
            await probe_search(database, viewer, args.runs)
            await probe_poll(database, args.runs)
        finally:
            await database.dispose()
    finally:
        await drop_database(args.admin_url, url)
    probe_verify()


if __name__ == "__main__":
    asyncio.run(main())
