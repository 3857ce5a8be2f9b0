"""Initial schema: users, follows, sleep_records.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from goodnight.db import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("username", sa.String(30), nullable=False),
        sa.Column("username_key", sa.String(30), nullable=False),
        sa.Column("name", sa.String(60), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("followers_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("followings_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_active_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username_key", name="uq_users_username_key"),
    )
    op.create_table(
        "follows",
        sa.Column("follower_id", sa.Uuid(), nullable=False),
        sa.Column("followed_id", sa.Uuid(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("followed_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["follower_id"], ["users.id"], name="fk_follows_follower_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["followed_id"], ["users.id"], name="fk_follows_followed_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("follower_id", "followed_id", name="pk_follows"),
    )
    op.create_index(
        "ix_follows_followed_active_recent",
        "follows",
        ["followed_id", "active", "followed_at", "follower_id"],
    )
    op.create_index(
        "ix_follows_follower_active_recent",
        "follows",
        ["follower_id", "active", "followed_at", "followed_id"],
    )
    op.create_table(
        "sleep_records",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("clocked_in_at", UTCDateTime(), nullable=False),
        sa.Column("clocked_out_at", UTCDateTime(), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("open_flag", sa.SmallInteger(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "(open_flag = 1 AND clocked_out_at IS NULL AND duration_s IS NULL)"
            " OR (open_flag IS NULL AND clocked_out_at IS NOT NULL AND duration_s IS NOT NULL)",
            name="open_flag_matches_state",
        ),
        sa.CheckConstraint("duration_s IS NULL OR duration_s >= 0", name="duration_not_negative"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_sleep_records_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sleep_records"),
        sa.UniqueConstraint("user_id", "open_flag", name="uq_sleep_records_one_open_per_user"),
    )
    op.create_index(
        "ix_sleep_records_user_recent", "sleep_records", ["user_id", "clocked_in_at", "duration_s", "id"]
    )


def downgrade() -> None:
    op.drop_table("sleep_records")
    op.drop_table("follows")
    op.drop_table("users")
