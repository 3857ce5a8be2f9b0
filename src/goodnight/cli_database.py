"""How every command answers a database it cannot use: one line saying why, a non-zero exit, no traceback.

A command runs as usual; only when it fails with a database-layer error does ``diagnose`` look again, on a
connection of its own, to tell an unreachable server from a database without the schema this version needs.
A failure with the database reachable and up to date is a bug, and keeps its traceback. The URL's password
never appears: the location is rebuilt from the host and port, and the driver's reason is scrubbed of it.

A SQLite file that does not exist is never opened, neither by a command that needs the schema nor by
``diagnose``: opening it would create an empty one, or fail on a thread of aiosqlite's that outlives the
command's event loop and prints a traceback of its own.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, ParamSpec, TypeVar

import typer

from goodnight.config import Settings, get_settings

if TYPE_CHECKING:
    from pathlib import Path

    import sqlalchemy as sa
    from sqlalchemy.engine import URL

# Alembic and the async engine are imported only once something failed: every command (and every worker
# process ``goodnight serve`` spawns) imports this module, and they would more than double its import time.

MIGRATE = "run goodnight migrate"
NO_SCHEMA = f"the database has no schema; {MIGRATE}"
EXIT_CODE = 1
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}

P = ParamSpec("P")
R = TypeVar("R")


class DatabaseProblem(Exception):
    """The database cannot be used by this command; the message is the one line the operator reads."""


def uses_database(*, needs_schema: bool = True) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Wrap a command so that a database it cannot use ends it with one line on stderr and exit status 1.

    ``needs_schema=False`` for commands that create the schema themselves (``migrate``, ``serve``, ``seed``):
    for them a missing schema is not a problem, so only an unreachable database is reported.
    """

    def decorate(command: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(command)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                if needs_schema:
                    _refuse_a_missing_sqlite_file()
                return command(*args, **kwargs)
            except DatabaseProblem as problem:
                _fail(str(problem))
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                found = asyncio.run(diagnose(get_settings(), needs_schema=needs_schema, failure=exc))
                if found is None:
                    raise  # reachable and up to date: not the operator's problem, keep the traceback
                _fail(found)

        return guarded

    return decorate


def _refuse_a_missing_sqlite_file() -> None:
    try:
        settings = get_settings()
    except Exception:
        return  # the command reports a configuration error itself
    missing = _missing_sqlite_file(settings)
    if missing is not None:
        raise DatabaseProblem(no_database_at(missing))


async def require_usable(settings: Settings) -> None:
    """Check before a long-running command starts (a worker rides out outages once it runs, but one that
    never could have worked should say so and stop)."""
    found = await diagnose(settings, needs_schema=True)
    if found is not None:
        raise DatabaseProblem(found)


async def diagnose(
    settings: Settings, *, needs_schema: bool, failure: BaseException | None = None
) -> str | None:
    """What keeps a command from using the database, in one line; None when nothing does. ``failure`` is
    the command's own error, the only news there is about a SQLite file that could not be created."""
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    from goodnight.db import create_engine
    from goodnight.migrate import alembic_config

    missing = _missing_sqlite_file(settings)
    if missing is not None:
        if needs_schema:
            return no_database_at(missing)
        return None if failure is None else unreachable(make_url(settings.database_url), failure)
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(_current_revision)
    except Exception as exc:
        if not is_database_error(exc):
            raise
        return unreachable(make_url(settings.database_url), exc)
    finally:
        await engine.dispose()
    if not needs_schema:
        return None
    if current is None:
        return NO_SCHEMA
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    known = {revision.revision for revision in script.walk_revisions()}
    # A revision this version does not know was written by a newer one: not ours to call out of date.
    if current != head and current in known:
        return f"the database schema is out of date (at {current}, this version needs {head}); {MIGRATE}"
    return None


def no_database_at(path: Path) -> str:
    return f"there is no database at {path}; {MIGRATE}"


def _missing_sqlite_file(settings: Settings) -> Path | None:
    path = settings.sqlite_path()
    return path if path is not None and not path.exists() else None


def unreachable(url: URL, exc: BaseException) -> str:
    return f"cannot reach the database at {location(url)}: {_reason(exc, url.password)}"


def location(url: URL) -> str:
    """``host:port`` of a server (the driver's default port if the URL has none), or a SQLite file's path."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.database or ":memory:"
    host = url.host or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{url.port or DEFAULT_PORTS.get(backend, '?')}"


def is_database_error(exc: BaseException) -> bool:
    """SQLAlchemy wraps the drivers' errors, except a refused or unresolvable connection, which asyncpg
    raises as the socket's own OSError."""
    import sqlalchemy as sa

    return isinstance(exc, sa.exc.SQLAlchemyError | OSError)


def _current_revision(connection: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    revision: str | None = MigrationContext.configure(connection).get_current_revision()
    return revision


def _reason(exc: BaseException, password: str | None) -> str:
    import sqlalchemy as sa

    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    args: tuple[object, ...] = cause.args
    if isinstance(cause, OSError) and cause.errno is not None and cause.errno > 0:
        text = os.strerror(cause.errno)  # "Connection refused", not asyncio's "Connect call failed (...)"
        if cause.filename is not None:
            text += f" ({cause.filename})"  # which directory in a SQLite file's path is in the way
    elif len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = args[1]  # the MySQL drivers' (code, message) pairs, and resolver errors
    else:
        text = str(cause)
    text = " ".join(text.split()) or type(cause).__name__
    return text.replace(password, "***") if password else text


def _fail(message: str) -> NoReturn:
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(EXIT_CODE) from None
