"""The migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import goodnight.models  # noqa: F401  (registers the tables)
from goodnight.db import Base
from goodnight.deps import Services
from goodnight.migrate import head_revision, upgrade_to_head
from tests.support.databases import TestDatabase, settings_for


def _differences(connection: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [diff for diff in compare_metadata(context, Base.metadata) if diff[0] != "remove_table"]


def _revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def test_migrated_schema_matches_the_models(services: Services) -> None:
    async with services.database.engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


async def test_database_is_at_head_and_upgrading_again_is_a_no_op(
    database: TestDatabase, services: Services
) -> None:
    assert await upgrade_to_head(settings_for(database.url)) == head_revision()
    async with services.database.engine.connect() as connection:
        assert await connection.run_sync(_revision) == head_revision()
