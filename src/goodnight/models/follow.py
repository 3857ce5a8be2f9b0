from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from goodnight.db import Base
from goodnight.kit.clock import utcnow


class Follow(Base):
    """One row per (follower, followed) pair, ever. Unfollowing clears ``active``; following again sets it
    and moves ``followed_at``, so the row and its primary key are reused instead of piling up."""

    __tablename__ = "follows"

    follower_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    followed_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    followed_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Bumped by every follow and unfollow of this pair (under the pair's row locks): the Redis timeline keeps
    # the newest version it has applied, so a worker holding an older read cannot undo a newer change.
    version: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")

    __table_args__ = (
        # "Who follows X, newest first" and "whom does X follow, newest first", over active rows.
        sa.Index("ix_follows_followed_active_recent", "followed_id", "active", "followed_at", "follower_id"),
        sa.Index("ix_follows_follower_active_recent", "follower_id", "active", "followed_at", "followed_id"),
        # Fanout walks a user's followers in follower-id order, a batch at a time.
        sa.Index("ix_follows_fanout", "followed_id", "follower_id", "active"),
    )
