"""Keyset ("seek") pagination helpers shared by every list endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import QueryableAttribute

Row = TypeVar("Row")


def before(columns: Sequence[QueryableAttribute[Any]], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """``(a, b) < (x, y)``: rows strictly after the cursor in a descending ``(a, b)`` order.

    A row-value comparison, so PostgreSQL, MariaDB and SQLite can all answer it with one index range seek.
    """
    pairs = zip(columns, values, strict=True)
    return sa.tuple_(*columns) < sa.tuple_(*(sa.literal(value, type_=column.type) for column, value in pairs))


def before_bound(columns: Sequence[QueryableAttribute[Any]], names: Sequence[str]) -> sa.ColumnElement[bool]:
    """``before`` with the cursor's values bound by name at execution, for a statement built once."""
    pairs = zip(columns, names, strict=True)
    return sa.tuple_(*columns) < sa.tuple_(*(sa.bindparam(name, type_=column.type) for column, name in pairs))


def split_page(rows: Sequence[Row], limit: int) -> tuple[list[Row], bool]:
    """Queries fetch ``limit + 1`` rows; the extra one only tells whether another page exists."""
    return list(rows[:limit]), len(rows) > limit
