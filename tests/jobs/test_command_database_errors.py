"""Every command that uses the database answers one it cannot use with one line and exit status 1: a server
it cannot reach (where, and the driver's reason, never the password), a database without the schema, or
with an older one. Anything else keeps its traceback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import make_url
from typer.testing import Result

from goodnight.cli_database import NO_SCHEMA, diagnose, location, unreachable, uses_database
from goodnight.db import create_engine
from goodnight.migrate import alembic_config, head_revision
from tests.support.cli import invoke
from tests.support.databases import TestDatabase, settings_for
from tests.support.processes import free_port

PASSWORD = "hunter2-s3cret"
REDIS_NOWHERE = "redis://127.0.0.1:9/0"  # the worker needs a Redis URL; the database is checked first

# (arguments, extra environment): every command that opens the database.
SCHEMA_COMMANDS: list[tuple[list[str], dict[str, str]]] = [
    (["outbox", "status"], {}),
    (["outbox", "status", "--json"], {}),
    (["outbox", "dead"], {}),
    (["outbox", "dead", "--json"], {}),
    (["outbox", "retry-dead"], {}),
    (["outbox", "retry-dead", "--id", "1"], {}),
    (["worker"], {"GOODNIGHT_REDIS_URL": REDIS_NOWHERE}),
]
# These create the schema themselves: only a database they cannot reach stops them.
SCHEMA_MAKING_COMMANDS: list[tuple[list[str], dict[str, str]]] = [
    (["migrate"], {}),
    (["serve", "--port", "9"], {"GOODNIGHT_JWT_SECRET": "a-test-secret-long-enough-0123456789abcdef"}),
    (
        ["seed", "--users", "10", "--celebrities", "0", "--avg-followings", "1", "--password", "sleepy-pass"],
        {},
    ),
]


def assert_one_line(result: Result, line: str) -> None:
    assert isinstance(result.exception, SystemExit), result.output  # exited; no traceback
    assert result.exit_code == 1, result.output
    assert result.stderr == line + "\n"
    assert result.stdout == ""
    assert PASSWORD not in result.output


@pytest.mark.parametrize(
    ("args", "env"), SCHEMA_COMMANDS + SCHEMA_MAKING_COMMANDS, ids=lambda value: str(value)
)
async def test_a_closed_port_is_one_line_without_the_password(args: list[str], env: dict[str, str]) -> None:
    port = free_port()
    url = f"postgresql+asyncpg://goodnight:{PASSWORD}@127.0.0.1:{port}/goodnight"
    result = await invoke(args, url, env)
    assert_one_line(result, f"cannot reach the database at 127.0.0.1:{port}: Connection refused")


async def test_unreachable_mariadb() -> None:
    port = free_port()
    result = await invoke(["outbox", "status"], f"mysql+asyncmy://root:{PASSWORD}@127.0.0.1:{port}/goodnight")
    assert_one_line(
        result,
        f"cannot reach the database at 127.0.0.1:{port}: Can't connect to MySQL server on '127.0.0.1' "
        f"([Errno 111] Connect call failed ('127.0.0.1', {port}))",
    )


async def test_a_missing_sqlite_file_is_named_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "goodnight.db"
    for args, env in SCHEMA_COMMANDS:
        result = await invoke(args, f"sqlite+aiosqlite:///{missing}", env)
        assert_one_line(result, f"there is no database at {missing}; run goodnight migrate")
    assert not missing.parent.exists()


async def test_a_sqlite_file_that_cannot_be_created(tmp_path: Path) -> None:
    """``migrate`` creates the file and its directory; here a regular file is in the way."""
    (tmp_path / "taken").write_text("not a directory")
    path = tmp_path / "taken" / "goodnight.db"
    for args, env in SCHEMA_MAKING_COMMANDS:
        result = await invoke(args, f"sqlite+aiosqlite:///{path}", env)
        assert_one_line(result, f"cannot reach the database at {path}: File exists ({path.parent})")


async def test_an_empty_sqlite_file_has_no_schema(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    for args, env in SCHEMA_COMMANDS:
        assert_one_line(await invoke(args, f"sqlite+aiosqlite:///{path}", env), NO_SCHEMA)
    assert await _tables(f"sqlite+aiosqlite:///{path}") == []  # looking created nothing


async def test_an_empty_postgresql_database_has_no_schema(empty_postgres: TestDatabase) -> None:
    for args, env in SCHEMA_COMMANDS:
        assert_one_line(await invoke(args, empty_postgres.url, env), NO_SCHEMA)
    assert await _tables(empty_postgres.url) == []


async def test_a_database_behind_this_version_says_to_migrate(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await _migrate_to(url, "0001")  # before the outbox existed
    expected = (
        f"the database schema is out of date (at 0001, this version needs {head_revision()}); "
        "run goodnight migrate"
    )
    for args, env in (SCHEMA_COMMANDS[0], SCHEMA_COMMANDS[-1]):
        assert_one_line(await invoke(args, url, env), expected)
    # Once migrated, the same command works.
    assert (await invoke(["migrate"], url)).exit_code == 0
    status = await invoke(["outbox", "status", "--json"], url)
    assert status.exit_code == 0, status.output


async def test_a_usable_database_is_no_problem(database: TestDatabase, tmp_path: Path) -> None:
    assert await diagnose(settings_for(database.url), needs_schema=True) is None
    # A database without a schema is fine for a command that makes it.
    empty = tmp_path / "empty.db"
    empty.touch()
    assert await diagnose(settings_for(f"sqlite+aiosqlite:///{empty}"), needs_schema=False) is None


async def test_other_failures_keep_their_traceback(
    database: TestDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure that is not the database's, or one where the database turns out fine, is a bug to see."""
    from goodnight.config import get_settings

    monkeypatch.setenv("GOODNIGHT_DATABASE_URL", database.url)
    get_settings.cache_clear()

    @uses_database()
    def not_the_database() -> None:
        raise ValueError("a bug")

    @uses_database()
    def the_database_but_fine() -> None:
        raise sa.exc.OperationalError("SELECT broken", {}, Exception("syntax error"))

    try:
        with pytest.raises(ValueError, match="a bug"):
            await asyncio.to_thread(not_the_database)
        with pytest.raises(sa.exc.OperationalError):
            await asyncio.to_thread(the_database_but_fine)
    finally:
        get_settings.cache_clear()


def test_where_the_database_is_never_shows_the_password() -> None:
    url = make_url(f"postgresql+asyncpg://goodnight:{PASSWORD}@db.internal/goodnight")
    message = unreachable(url, OSError(f"the server said {PASSWORD} is wrong"))
    assert message == "cannot reach the database at db.internal:5432: the server said *** is wrong"
    assert location(make_url("mysql+asyncmy://root@[2001:db8::7]/goodnight")) == "[2001:db8::7]:3306"
    assert location(make_url("sqlite+aiosqlite:///data/goodnight.db")) == "data/goodnight.db"


async def _tables(url: str) -> list[str]:
    engine = create_engine(settings_for(url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    finally:
        await engine.dispose()


async def _migrate_to(url: str, revision: str) -> None:
    def upgrade(connection: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()

    engine = create_engine(settings_for(url))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(upgrade)
    finally:
        await engine.dispose()
