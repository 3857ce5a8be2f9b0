"""Engine, sessions and the declarative base shared by every model."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from goodnight.config import Settings
from goodnight.kit.clock import to_utc

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Execution option set on the engine used by requests that write (see ``Database.writer``).
SQLITE_IMMEDIATE = "goodnight_sqlite_immediate"


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database (SQLite and MariaDB have no time zones).

    MariaDB gets DATETIME(6) so microseconds survive, as they do on PostgreSQL and SQLite.
    """

    impl = sa.DateTime(timezone=False)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else to_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else to_utc(value)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), uuid.UUID: sa.Uuid()}


# A pooled PostgreSQL connection idle for longer than this is pinged before it is used again (see
# ``_check_on_checkout``); one in steady use is not.
IDLE_PING_SECONDS = 10.0


def max_connections(settings: Settings) -> int:
    """The most connections a process's pool opens: the configured size, and as many again under load."""
    return 2 * settings.database_pool_size


def create_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.database_url)
    backend = url.get_backend_name()
    # asyncpg tells at no cost whether the server has closed a connection, so PostgreSQL connections are
    # checked on checkout without a round trip (``_check_on_checkout``); the other drivers ping each time.
    options: dict[str, Any] = {"pool_pre_ping": backend != "postgresql"}
    if backend == "sqlite":
        options["connect_args"] = {"timeout": 30}
    else:
        # Up to twice the configured size, and every connection opened stays open: SQLAlchemy closes an
        # overflow connection as soon as it is given back to a full pool, so a steady load that kept more than
        # the pool's size busy opened (and PostgreSQL forked) a new connection for about one request in
        # twenty. Beyond the configured size is still reported as overflow (``observability.sampler``).
        options["pool_size"] = max_connections(settings)
        options["max_overflow"] = 0
        # Waiting for a connection is bounded: past it the request is refused with 503 (see
        # ``is_database_unavailable``), instead of queueing for half a minute and failing anyway.
        options["pool_timeout"] = settings.database_pool_timeout_seconds
        options["pool_recycle"] = 1800
        # Opening a connection is bounded the same way: a database that drops packets instead of refusing
        # them would otherwise hold the request for the driver's default (60 s for asyncpg).
        timeout_option = "timeout" if backend == "postgresql" else "connect_timeout"
        options["connect_args"] = {timeout_option: settings.database_pool_timeout_seconds}
    if backend in ("mysql", "mariadb"):
        # Read committed avoids InnoDB gap locks that would make independent writers wait on each other.
        options["isolation_level"] = "READ COMMITTED"
        url = url.update_query_dict({"charset": "utf8mb4"})
    engine = create_async_engine(url, **options)
    if backend == "sqlite":
        _configure_sqlite(engine)
    if backend == "postgresql":
        _check_on_checkout(engine)
    return engine


def _check_on_checkout(engine: AsyncEngine) -> None:
    """Hand out only live PostgreSQL connections, without a round trip in steady use.

    ``pool_pre_ping`` costs three round trips (BEGIN, an empty query, ROLLBACK) on every checkout: half of
    what a one-row read sends. Instead, a connection the server has closed (a restart, an administrator's
    ``pg_terminate_backend``) is known to asyncpg already, for free; only one idle long enough for a
    firewall to have dropped it silently is pinged. A connection that dies unseen within that time fails its
    request with a 503, and the pool then replaces every connection it held before the failure.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise sa.exc.DisconnectionError("the server closed this connection")
        idle = time.monotonic() - record.info.get("checked_in_at", time.monotonic())
        if idle > IDLE_PING_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as exc:
                raise sa.exc.DisconnectionError("the connection failed its ping") from exc


def _configure_sqlite(engine: AsyncEngine) -> None:
    """Make SQLite safe for concurrent requests.

    WAL lets readers run beside the writer. Writers begin ``IMMEDIATE`` so they queue for the write lock up
    front (honouring the busy timeout) instead of upgrading a read lock mid-transaction, which SQLite refuses
    with SQLITE_BUSY rather than waiting. The driver's own transaction handling is switched off for ours.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        immediate = connection.get_execution_options().get(SQLITE_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# SQLSTATE classes that mean "not now" rather than "wrong": connection exceptions, insufficient resources
# (too many connections), operator intervention (shutdown, starting up, statement timeout).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")


def is_database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot serve right now (down, restarting, out of connections, a
    statement timeout) — a 503 the client may retry — as opposed to a bug or a constraint violation."""
    if isinstance(exc, sa.exc.TimeoutError | sa.exc.DisconnectionError | OSError):
        return True  # the pool's wait ran out, or the driver could not connect at all
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    return False


# What a read query runs on: a request's session, or a fast lane's bare connection.
Reads = AsyncSession | AsyncConnection


class ReadRouting(Protocol):
    """Where reads go when read replicas are configured (``goodnight.replicas``)."""

    def session(self, user_id: uuid.UUID | None) -> AbstractAsyncContextManager[AsyncSession]: ...

    def connection(self, user_id: uuid.UUID | None) -> AbstractAsyncContextManager[AsyncConnection]: ...

    def fenced_session(self) -> AbstractAsyncContextManager[AsyncSession]: ...

    async def wrote(self, user_id: uuid.UUID) -> None: ...


def read_engine(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` as reads use it: on PostgreSQL, without a transaction around them.

    A read-only unit of work gains nothing from BEGIN and COMMIT at READ COMMITTED, where every statement
    takes its own snapshot anyway, and they are two of the three round trips of a one-row read. asyncpg
    switches to autocommit without a round trip; MariaDB's driver would send two (set, then reset), and
    SQLite's snapshot does span a transaction, so both keep theirs.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def read_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return _sessions(read_engine(engine))


def _sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Objects stay readable after commit (responses are built from them), and nothing flushes by surprise.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class Database:
    """The engine plus two session factories: one for reads, one for requests that write.

    ``reader`` and ``writer`` always reach the primary. ``read_session`` is for reads that tolerate a moment's
    staleness: with replicas configured (``routing``), it may be served by one, the reader's own writes
    excepted.
    """

    def __init__(self, settings: Settings) -> None:
        self.engine = create_engine(settings)
        self.is_sqlite = settings.is_sqlite
        self.pool_size = settings.database_pool_size  # the configured size (see ``max_connections``)
        writer_engine = self.engine.execution_options(**{SQLITE_IMMEDIATE: True})
        self._read_engine = read_engine(self.engine)
        self.reader = _sessions(self._read_engine)
        self.writer = _sessions(writer_engine)
        self.routing: ReadRouting | None = None

    def read_session(self, user_id: uuid.UUID | None) -> AbstractAsyncContextManager[AsyncSession]:
        """A unit of work for a read on behalf of ``user_id`` (None: nobody signed in)."""
        if self.routing is None:
            return self.reader()
        return self.routing.session(user_id)

    def read_connection(self, user_id: uuid.UUID | None) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for ``DriverSelect`` reads (``kit.driver_select``) on behalf of ``user_id``, routed
        as ``read_session`` is: for the fast lanes (``kit.fast_lane``), which need neither a session nor its
        unit of work. On PostgreSQL those reads run on the driver outside any transaction, so the read
        engine's AUTOCOMMIT would only add its cost (about 14 µs per checkout and checkin); a statement
        SQLAlchemy runs here instead (a driver read's fallback) begins a transaction that the pool rolls
        back when the connection is given back."""
        if self.routing is None:
            return self.engine.connect()
        return self.routing.connection(user_id)

    def fenced_session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A read that sees everything committed on the primary before it was asked for, as a read on the
        primary would. With replicas, it takes the primary's position first and waits a moment for a replica
        that has replayed past it (else it reads the primary): for background work such as a timeline
        rebuild, which can spare the wait."""
        if self.routing is None:
            return self.reader()
        return self.routing.fenced_session()

    async def dispose(self) -> None:
        await self.engine.dispose()


AFTER_COMMIT = "goodnight_after_commit"
AfterCommit = Callable[[], Awaitable[None]]
logger = logging.getLogger("goodnight.db")


def after_commit(session: AsyncSession, action: AfterCommit) -> None:
    """Run ``action`` once this unit of work has committed (never if it rolls back).

    For best-effort follow-ups such as applying an event to a cache right away; anything that must happen is
    also in the outbox, written inside the transaction.
    """
    session.info.setdefault(AFTER_COMMIT, []).append(action)


@asynccontextmanager
async def session_scope(
    factory: Callable[[], AbstractAsyncContextManager[AsyncSession]],
) -> AsyncIterator[AsyncSession]:
    """The unit of work of one request or job: commit on success, roll back on any error.

    A context manager, not a generator to iterate: an error in the block reaches it (and whatever made the
    session) at once, instead of when the abandoned generator is collected."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        for action in session.info.pop(AFTER_COMMIT, []):
            try:
                await action()
            except Exception:
                logger.warning("after-commit action failed; the outbox will catch up", exc_info=True)
