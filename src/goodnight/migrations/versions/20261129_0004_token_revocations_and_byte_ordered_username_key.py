"""Token revocations (logout, password change), and a byte-ordered username key for finding people.

The key's collation changes on PostgreSQL ("C") and MariaDB (utf8mb4_bin) so that a username prefix is one
range of its unique index on every backend; SQLite's default BINARY collation already is byte order. Keys
are lower-case [a-z0-9_], so uniqueness is unchanged. Both ALTERs rebuild the unique index with the users
table locked: with a million users, 0.8 s on PostgreSQL 15 and 2.7 s on MariaDB 10.11 (measured on a
2-core machine).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from goodnight.db import UTCDateTime
from goodnight.models.outbox import BigId

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BYTE_ORDER = {"postgresql": "C", "mysql": "utf8mb4_bin", "mariadb": "utf8mb4_bin"}
# What 0001 left: the database's default collation.
DEFAULT_ORDER = {"postgresql": "default", "mysql": "utf8mb4_unicode_ci", "mariadb": "utf8mb4_unicode_ci"}


def upgrade() -> None:
    op.create_table(
        "token_revocations",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("token_id", sa.String(64), nullable=True),
        sa.Column("issued_before", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_token_revocations"),
        sa.CheckConstraint(
            "(token_id IS NOT NULL AND issued_before IS NULL)"
            " OR (token_id IS NULL AND issued_before IS NOT NULL)",
            name="ck_token_revocations_one_token_or_a_cutoff",
        ),
    )
    op.create_index("ix_token_revocations_expires_at", "token_revocations", ["expires_at"])
    _collate_username_key(BYTE_ORDER)


def downgrade() -> None:
    _collate_username_key(DEFAULT_ORDER)
    op.drop_index("ix_token_revocations_expires_at", table_name="token_revocations")
    op.drop_table("token_revocations")


def _collate_username_key(collations: dict[str, str]) -> None:
    collation = collations.get(op.get_bind().dialect.name)
    if collation is None:  # SQLite: BINARY, byte order, from the start
        return
    op.alter_column(
        "users",
        "username_key",
        type_=sa.String(30, collation=collation),
        existing_type=sa.String(30),
        existing_nullable=False,
    )
