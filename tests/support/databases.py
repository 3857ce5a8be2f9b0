"""Throwaway databases for one test session, on every supported backend, created by the migrations."""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from goodnight.config import Settings
from goodnight.migrate import upgrade_to_head

BACKENDS = ("sqlite", "postgresql", "mariadb")

# Servers the suite talks to; override to point the suite elsewhere.
POSTGRES_ADMIN_URL = os.environ.get(
    "GOODNIGHT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get("GOODNIGHT_TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306/mysql")

TEST_JWT_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
TABLES_CHILD_FIRST = ("outbox", "sleep_records", "follows", "users")


class ServerUnavailable(RuntimeError):
    """A database server the suite needs is down. The suite fails; it never skips a backend."""


@dataclass
class TestDatabase:
    __test__ = False  # a fixture value, not a test class for pytest to collect

    backend: str
    url: str
    _admin_url: str | None
    _name: str | None

    async def drop(self) -> None:
        if self._admin_url is None or self._name is None:
            return
        engine = create_async_engine(self._admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                if self.backend == "postgresql":
                    await connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)'))
                else:
                    await connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{self._name}`"))
        finally:
            await engine.dispose()


def settings_for(url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": url,
        "jwt_secret": TEST_JWT_SECRET,
        # Real Argon2id, at a cost that keeps a suite registering thousands of users fast.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8,
        "argon2_parallelism": 1,
        # The suite makes thousands of requests from one address; the rate limit tests switch them on.
        "rate_limits": False,
        # Race tests send a hundred requests at once on purpose; backpressure tests set a cap of their own.
        "max_requests_in_flight": 10_000,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def create_database(backend: str) -> TestDatabase:
    name = f"goodnight_test_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        directory = Path(tempfile.mkdtemp(prefix="goodnight-test-"))
        database = TestDatabase(backend, f"sqlite+aiosqlite:///{directory / 'goodnight.db'}", None, None)
    else:
        admin_url = POSTGRES_ADMIN_URL if backend == "postgresql" else MARIADB_ADMIN_URL
        engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                quoted = f'"{name}"' if backend == "postgresql" else f"`{name}`"
                suffix = " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" if backend == "mariadb" else ""
                await connection.execute(sa.text(f"CREATE DATABASE {quoted}{suffix}"))
        except (OSError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise ServerUnavailable(
                f"cannot reach the {backend} server at {make_url(admin_url).render_as_string()}: {exc}. "
                "Start it (scripts/services does) or point GOODNIGHT_TEST_*_URL at one."
            ) from exc
        finally:
            await engine.dispose()
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        database = TestDatabase(backend, url, admin_url, name)
    # Every test session builds its schema through the migrations, so the migrations are tested too.
    await upgrade_to_head(settings_for(database.url))
    return database


async def truncate(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        for table in TABLES_CHILD_FIRST:
            await connection.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608  (fixed table names)
