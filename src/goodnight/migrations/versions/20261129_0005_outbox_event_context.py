"""Who wrote each outbox event: the request id and trace context the worker continues under.

A nullable column added without a default: instant on PostgreSQL and MariaDB (no table rewrite), and on
SQLite an ``ALTER TABLE ... ADD COLUMN``. Events written before it have no context and are applied as before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("context", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "context")
