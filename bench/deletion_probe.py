"""What deleting a popular account costs, on a throwaway PostgreSQL database and a private redis-server.

    scripts/uv run --frozen python bench/deletion_probe.py --followers 50000

1. Fills ``users`` with the followers straight in SQL, registers the account through the API, makes every
   filler follow it (and it follow 500 of them), and gives it a night for each of the last 8 days.
2. Times ``PATCH /users/me`` (a rename: its renderings written again inline) and ``DELETE /users/me``
   through the app in process (the request: locks, counters, rows, revocation, the inline tombstones), then
   the outbox worker applying the events (``account_deleted``, then a ``deleted_account_followers`` per
   1,000 followers), and checks the counters afterwards.

The database is dropped and the redis-server stopped afterwards. Point ``--admin-url`` elsewhere to measure
on another PostgreSQL server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from goodnight.config import Settings
from goodnight.jobs.worker import Worker
from goodnight.main import create_app
from goodnight.migrate import upgrade_to_head

PASSWORD = "probe password"  # noqa: S105  (a throwaway database)
PROBE_SECRET = "probe-secret-0123456789-abcdefghijklmnopqrstuvwxyz"  # noqa: S105
FILL_FOLLOWERS = """
INSERT INTO users (id, username, username_key, password_hash, followers_count, followings_count,
                   last_active_at, created_at, updated_at)
SELECT gen_random_uuid(), 'f' || i, 'f' || i, 'x', 0, 1, now(), now(), now() FROM generate_series(1, :count) i
"""
FOLLOW_IT = """
INSERT INTO follows (follower_id, followed_id, active, followed_at, created_at, updated_at, version)
SELECT id, :star, true, now(), now(), now(), 1 FROM users WHERE id <> :star
"""
IT_FOLLOWS = """
INSERT INTO follows (follower_id, followed_id, active, followed_at, created_at, updated_at, version)
SELECT :star, id, true, now(), now(), now(), 1 FROM users WHERE id <> :star ORDER BY id LIMIT 500
"""
COUNTERS = """
UPDATE users SET followers_count = followers_count + 1 WHERE id IN (
    SELECT followed_id FROM follows WHERE follower_id = :star);
"""


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="goodnight-probe-redis-")
    command = [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", directory]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: S603  (our own arguments)
    try:
        time.sleep(0.3)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def throwaway_database(admin_url: str) -> AsyncIterator[str]:
    name = f"goodnight_probe_{int(time.time())}"
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with engine.connect() as connection:
            await connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await engine.dispose()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def probe(url: str, redis_url: str, followers: int) -> None:
    settings = Settings(
        database_url=url,
        redis_url=redis_url,
        jwt_secret=PROBE_SECRET,
        embedded_worker=False,
        rate_limits=False,
        timeline_max_lag_seconds=300,
    )
    await upgrade_to_head(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe/api/v1") as http:
            created = await http.post("/users", json={"username": "star", "password": PASSWORD})
            star = created.json()["id"]
            login = await http.post("/auth/login", json={"username": "star", "password": PASSWORD})
            headers = {"Authorization": f"Bearer {login.json()['token']}"}
            started = time.perf_counter()
            database = app.state.services.database
            async with database.engine.begin() as connection:
                await connection.execute(sa.text(FILL_FOLLOWERS), {"count": followers})
                await connection.execute(sa.text(FOLLOW_IT), {"star": star})
                await connection.execute(sa.text(IT_FOLLOWS), {"star": star})
                await connection.execute(sa.text(COUNTERS), {"star": star})
                await connection.execute(
                    sa.text("UPDATE users SET followers_count = :n, followings_count = 500 WHERE id = :star"),
                    {"n": followers, "star": star},
                )
            async with database.engine.connect() as connection:
                await connection.execute(sa.text("ANALYZE"))
                await connection.commit()
            print(f"filled {followers:,} followers in {time.perf_counter() - started:.1f}s")
            for days in range(8, 0, -1):
                start = datetime.now(UTC) - timedelta(days=days - 0.1)
                body = {"clocked_in_at": iso(start), "clocked_out_at": iso(start + timedelta(hours=7))}
                assert (await http.post("/sleep_records", json=body, headers=headers)).status_code == 201
            outbox: Worker = app.state.services.jobs.worker
            await outbox.drain()  # the nights' fanout (the star is a celebrity: none)

            started = time.perf_counter()
            renamed = await http.patch("/users/me", json={"name": "Star"}, headers=headers)
            assert renamed.status_code == 200, renamed.text
            took = (time.perf_counter() - started) * 1000
            print(f"PATCH /users/me (8 records re-rendered inline): {took:.0f} ms")
            await outbox.drain()

            started = time.perf_counter()
            deleted = await http.request("DELETE", "/users/me", json={"password": PASSWORD}, headers=headers)
            assert deleted.status_code == 204, deleted.text
            print(
                f"DELETE /users/me ({followers:,} followers, 500 followings): "
                f"{(time.perf_counter() - started) * 1000:.0f} ms"
            )
            started = time.perf_counter()
            events = await outbox.drain()
            print(f"outbox: {events} events applied in {time.perf_counter() - started:.1f}s")
            async with database.engine.connect() as connection:
                wrong = await connection.scalar(
                    sa.text("SELECT count(*) FROM users WHERE followings_count <> 0 OR followers_count <> 0")
                )
            print(f"users whose counters are not 0 afterwards: {wrong}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--followers", type=int, default=50_000)
    parser.add_argument("--admin-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    with redis_server() as redis_url:
        async with throwaway_database(args.admin_url) as url:
            await probe(url, redis_url, args.followers)


if __name__ == "__main__":
    asyncio.run(main())
