"""Apply Alembic migrations, safely from many processes at once.

Every API server may run this at start-up, so it takes a database-wide lock first (a PostgreSQL advisory lock,
MySQL/MariaDB ``GET_LOCK``; SQLite serialises writers by itself): the first process migrates, the others wait
and then find nothing left to do.
"""

from __future__ import annotations

import asyncio
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from goodnight.config import Settings
from goodnight.db import create_engine

LOCK_KEY = 720_443_117  # any constant; identifies "goodnight migrations" among advisory locks
LOCK_NAME = "goodnight_migrations"
LOCK_TIMEOUT_S = 300


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("goodnight") / "migrations"))
    config.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade(connection: Connection) -> str | None:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
    elif dialect in ("mysql", "mariadb"):
        got = connection.execute(
            text("SELECT GET_LOCK(:name, :timeout)"), {"name": LOCK_NAME, "timeout": LOCK_TIMEOUT_S}
        ).scalar()
        if got != 1:
            raise RuntimeError("timed out waiting for another process to finish migrating")
    connection.commit()
    try:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()
        return MigrationContext.configure(connection).get_current_revision()
    finally:
        if dialect == "postgresql":
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
        elif dialect in ("mysql", "mariadb"):
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
        connection.commit()


async def upgrade_to_head(settings: Settings) -> str | None:
    """Bring the configured database to the newest revision; returns that revision."""
    db_path = settings.sqlite_path()
    if db_path is not None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_upgrade)
    finally:
        await engine.dispose()


def migrate(settings: Settings) -> str | None:
    return asyncio.run(upgrade_to_head(settings))
