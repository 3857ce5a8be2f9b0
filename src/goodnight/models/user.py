from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from goodnight.db import Base
from goodnight.kit.clock import utcnow
from goodnight.kit.ids import new_id

# Byte order on every backend: SQLite's default BINARY collation, PostgreSQL's "C", MariaDB's utf8mb4_bin.
# Keys hold only [a-z0-9_], so under byte order the names starting with a prefix are exactly one range
# [prefix, prefix with its last character incremented), which the unique index answers as a range seek. A
# linguistic collation breaks that: utf8mb4_unicode_ci sorts "_" before digits and digits before letters,
# and glibc locales skip "_" altogether, so no pair of bounds would hold exactly the names with a prefix.
# What a username may be: what registration accepts, and all a login need consider.
USERNAME_PATTERN = r"^[A-Za-z0-9_]{3,30}$"
# What a search may ask for: any start of a name that could exist.
USERNAME_PREFIX_PATTERN = r"^[A-Za-z0-9_]{1,30}$"
USERNAME_KEY = (
    sa.String(30)
    .with_variant(sa.String(30, collation="C"), "postgresql")
    .with_variant(sa.String(30, collation="utf8mb4_bin"), "mysql", "mariadb")
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(sa.String(30))
    # Lower-cased copy with the unique index: usernames are unique case-insensitively on every backend,
    # and people are found by a prefix of it.
    username_key: Mapped[str] = mapped_column(USERNAME_KEY, unique=True)
    name: Mapped[str | None] = mapped_column(sa.String(60))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    followers_count: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    followings_count: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    last_active_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    # Finding the celebrities after Redis lost its data.
    __table_args__ = (sa.Index("ix_users_followers_count", "followers_count"),)
