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


def page_limit(rows: int) -> sa.ColumnElement[int]:
    """A page query's LIMIT, written into the statement as a number rather than sent as a parameter.

    Why: PostgreSQL plans a prepared statement once for every execution only if the plan's cost does not
    hinge on unknown values. With the LIMIT unknown it expects to read every matching row, finds a plan for
    the actual values far cheaper, and so plans again on every execution: about 200 µs of its CPU per
    followers page. Page sizes are a handful of numbers, so the statements stay few.
    """
    return sa.literal_column(str(int(rows)), sa.Integer())


def split_page(rows: Sequence[Row], limit: int) -> tuple[list[Row], bool]:
    """Queries fetch ``limit + 1`` rows; the extra one only tells whether another page exists."""
    return list(rows[:limit]), len(rows) > limit
