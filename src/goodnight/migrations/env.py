"""Alembic environment. Migrations run on a connection handed over by ``goodnight.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import goodnight.models  # noqa: F401  (registers the tables)
from goodnight.db import Base

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with 'goodnight migrate', which provides the database connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
