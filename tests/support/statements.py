"""The SQL an app sends, as its driver receives it: to count queries, or to EXPLAIN the very statement."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@dataclass(frozen=True)
class Statement:
    sql: str
    parameters: Any  # bound and converted for the driver, ready to be sent again as they are


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[Statement]]:
    """Every statement ``engine`` sends while the block runs, transaction control left out."""
    sent: list[Statement] = []

    def record(_conn: object, _cursor: object, sql: str, parameters: Any, *_: object) -> None:
        if not sql.lstrip().upper().startswith(TRANSACTION_CONTROL):
            sent.append(Statement(sql, parameters))

    sync_engine = engine.sync_engine
    sa.event.listen(sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(sync_engine, "before_cursor_execute", record)


async def explain(engine: AsyncEngine, statement: Statement) -> list[dict[str, Any]]:
    """The plan the database would use for ``statement``: EXPLAIN's rows (EXPLAIN QUERY PLAN on SQLite)."""
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    async with engine.connect() as connection:
        rows = await connection.exec_driver_sql(prefix + statement.sql, statement.parameters)
        return [dict(row._mapping) for row in rows]
