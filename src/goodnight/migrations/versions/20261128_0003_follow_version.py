"""A version on each follow row, so caches can order concurrent changes to the same pair.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("follows", sa.Column("version", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("follows", "version")
