"""Transactional outbox, and the indexes fanout needs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from goodnight.db import UTCDateTime
from goodnight.models.outbox import BigId

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("available_at", UTCDateTime(), nullable=False),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("dead_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_ready", "outbox", ["dead_at", "available_at", "id"])
    op.create_index("ix_follows_fanout", "follows", ["followed_id", "follower_id", "active"])
    op.create_index("ix_users_followers_count", "users", ["followers_count"])


def downgrade() -> None:
    op.drop_index("ix_users_followers_count", table_name="users")
    op.drop_index("ix_follows_fanout", table_name="follows")
    op.drop_table("outbox")
