"""Bulk loading: PostgreSQL ``COPY`` (binary, through asyncpg), other backends ``executemany`` in big batches.

On PostgreSQL the secondary indexes, the one-open-record unique constraint and the foreign keys of the two
big tables are dropped before loading and rebuilt afterwards: building an index once over sorted data is
much cheaper than maintaining it row by row, and re-adding a foreign key checks it with one join instead of
a trigger per row. Their definitions come from the models, which the migrations match.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from goodnight.db import Base
from goodnight.models import Follow, SleepRecord, User  # noqa: F401  (registers the tables)

Row = tuple[Any, ...]
TABLES: dict[str, sa.Table] = {
    name: Base.metadata.tables[name] for name in ("users", "follows", "sleep_records")
}
# Tables whose secondary structures are rebuilt after loading (users is small next to them).
REBUILT = ("follows", "sleep_records")
COPY_BATCH = 50_000
EXECUTEMANY_BATCH = 5_000


@dataclass
class Deferred:
    """What was dropped before loading, in the order to recreate it."""

    indexes: list[sa.Index] = field(default_factory=list)
    constraints: list[sa.Constraint] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [str(index.name) for index in self.indexes] + [str(item.name) for item in self.constraints]


class Loader:
    """Buffers rows per table and writes them in large batches on one connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.dialect = connection.dialect
        self.is_postgresql = self.dialect.name == "postgresql"
        self.batch = COPY_BATCH if self.is_postgresql else EXECUTEMANY_BATCH
        self._buffers: dict[str, list[Row]] = {}
        self._columns: dict[str, Sequence[str]] = {}
        self._driver: Any = None
        self.deferred = Deferred()
        self.written: dict[str, int] = {}

    async def start(self) -> None:
        if self.is_postgresql:
            raw = await self.connection.get_raw_connection()
            self._driver = raw.driver_connection
            await self._driver.execute("SET synchronous_commit TO off")
            await self._driver.execute("SET maintenance_work_mem TO '512MB'")

    def native_ids(self, ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """On PostgreSQL, the same ids as asyncpg's own UUID type (a ``uuid.UUID`` subclass), which COPY
        encodes without a Python call per value; elsewhere the ids unchanged."""
        if not self.is_postgresql:
            return ids
        try:
            from asyncpg.pgproto.pgproto import UUID  # type: ignore[import-untyped]
        except ImportError:  # pragma: no cover  (a different asyncpg layout: plain UUIDs work too)
            return ids
        native: list[uuid.UUID] = [UUID(value.bytes) for value in ids]
        return native

    async def add(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        buffer = self._buffers.setdefault(table, [])
        self._columns[table] = columns
        buffer.extend(rows)
        if len(buffer) >= self.batch:
            await self.flush(table)

    async def flush(self, table: str | None = None) -> None:
        for name in [table] if table is not None else list(self._buffers):
            rows = self._buffers.get(name)
            if rows:
                self._buffers[name] = []
                await self._write(name, self._columns[name], rows)
                self.written[name] = self.written.get(name, 0) + len(rows)

    async def _write(self, table: str, columns: Sequence[str], rows: list[Row]) -> None:
        if self.is_postgresql:
            await self._driver.copy_records_to_table(table, records=rows, columns=list(columns))
            return
        statement = TABLES[table].insert()
        async with self.connection.begin():
            await self.connection.execute(statement, [dict(zip(columns, row, strict=True)) for row in rows])

    # --- PostgreSQL: drop secondary structures before loading, rebuild them after ---

    async def defer_secondary_structures(self) -> Deferred:
        if not self.is_postgresql:
            return self.deferred
        for name in REBUILT:
            table = TABLES[name]
            indexes = {
                row["indexname"]
                for row in await self._driver.fetch(
                    "SELECT indexname FROM pg_indexes WHERE tablename = $1", name
                )
            }
            constraints = {
                row["conname"]
                for row in await self._driver.fetch(
                    "SELECT conname FROM pg_constraint"
                    " WHERE conrelid = $1::regclass AND contype IN ('f', 'u')",
                    name,
                )
            }
            for index in sorted(table.indexes, key=lambda item: str(item.name)):
                if index.name in indexes:
                    await self._ddl(sa.schema.DropIndex(index))
                    self.deferred.indexes.append(index)
            wanted = [
                constraint
                for constraint in table.constraints
                if isinstance(constraint, sa.UniqueConstraint | sa.ForeignKeyConstraint)
            ]
            for constraint in sorted(wanted, key=lambda item: str(item.name)):
                if constraint.name in constraints:
                    await self._ddl(sa.schema.DropConstraint(constraint))
                    self.deferred.constraints.append(constraint)
        return self.deferred

    async def rebuild_secondary_structures(self, on_step: Any = None) -> None:
        """Recreate what ``defer_secondary_structures`` dropped (indexes first, then constraints)."""
        while self.deferred.indexes:
            index = self.deferred.indexes[0]
            await self._ddl(sa.schema.CreateIndex(index))
            self.deferred.indexes.pop(0)
            if on_step is not None:
                on_step(str(index.name))
        while self.deferred.constraints:
            constraint = self.deferred.constraints[0]
            await self._ddl(sa.schema.AddConstraint(constraint))
            self.deferred.constraints.pop(0)
            if on_step is not None:
                on_step(str(constraint.name))

    async def analyze(self) -> None:
        """Fresh statistics (and, on PostgreSQL, a visibility map for index-only scans)."""
        if self.is_postgresql:
            await self._driver.execute("VACUUM (ANALYZE) users, follows, sleep_records")
        elif self.dialect.name == "sqlite":
            async with self.connection.begin():
                await self.connection.exec_driver_sql("ANALYZE")
        else:
            async with self.connection.begin():
                await self.connection.exec_driver_sql("ANALYZE TABLE users, follows, sleep_records")

    async def _ddl(self, element: sa.schema.ExecutableDDLElement) -> None:
        await self._driver.execute(str(element.compile(dialect=self.dialect)))
