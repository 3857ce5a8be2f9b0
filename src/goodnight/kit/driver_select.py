"""A hot read's SELECT, run on PostgreSQL by asyncpg itself.

SQLAlchemy's execution of an already compiled statement (its execution context, cursor adapter and result
layers) cost a followers page about 140 µs of API CPU, more than the query costs PostgreSQL. A
``DriverSelect`` keeps the statement SQLAlchemy built, but on PostgreSQL hands its compiled text straight to
asyncpg on the same pooled connection (asyncpg prepares it once per connection), with the parameters
converted by the statement's own bind types. On MariaDB and SQLite SQLAlchemy runs it as usual.

A failure is left to SQLAlchemy (see ``DriverSelect.rows``). The rows are the driver's: columns whose types
convert values in Python (``db.UTCDateTime``, say) arrive unconverted, so such a statement selects them
through ``sa.type_coerce`` to a plain type and its caller converts what it uses. Rows unpack and index alike
on every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.pool import PoolProxiedConnection

Row = Sequence[Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the parameters, in their positions ($1, $2, ...)
    convert: tuple[Callable[[Any], Any] | None, ...]  # each one's bind conversion, if its type has one

    def arguments(self, parameters: Mapping[str, Any]) -> list[Any]:
        return [
            value if convert is None else convert(value)
            for value, convert in zip((parameters[name] for name in self.names), self.convert, strict=True)
        ]


class DriverSelect:
    """One SELECT (a fixed set of bind parameters), compiled once per dialect."""

    def __init__(self, statement: sa.Select[*tuple[Any, ...]]) -> None:
        self.statement = statement
        self._postgres: _Compiled | None = None

    async def rows(self, reads: AsyncSession | AsyncConnection, parameters: Mapping[str, Any]) -> list[Row]:
        connection = await reads.connection() if isinstance(reads, AsyncSession) else reads
        if connection.dialect.name != "postgresql":
            return list((await connection.execute(self.statement, parameters)).all())
        compiled = self._postgres or self._compile(connection.dialect)
        driver = (await _pooled(connection)).driver_connection
        assert driver is not None, "a checked-out connection has its driver connection"
        try:
            found: list[Row] = await driver.fetch(compiled.sql, *compiled.arguments(parameters))
        except Exception:
            # The driver's own exception means nothing to the rest of the app, which knows SQLAlchemy's
            # (a dead connection invalidated, a 503, a replica left for the primary). SQLAlchemy meets the
            # same failure running the statement, and raises and handles it as it always does; a read is
            # safe to run twice (a statement timeout waits twice).
            return list((await connection.execute(self.statement, parameters)).all())
        return found

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        convert = tuple(compiled.binds[name].type.bind_processor(dialect) for name in names)
        self._postgres = _Compiled(compiled.string, names, convert)
        return self._postgres


async def _pooled(connection: AsyncConnection) -> PoolProxiedConnection:
    """The pooled connection under ``connection``, read off SQLAlchemy's ``Connection`` where it is simply
    there: ``get_raw_connection`` makes a round through SQLAlchemy's greenlet (about 10 µs) to revalidate
    a connection, which only an invalidated or closed one needs (and then gets)."""
    sync = connection.sync_connection
    if sync is not None and not sync.closed and not sync.invalidated:
        return sync.connection
    return await connection.get_raw_connection()
