from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from goodnight.db import Base
from goodnight.kit.clock import utcnow
from goodnight.kit.ids import new_id

OPEN = 1


class SleepRecord(Base):
    """A night's sleep. ``open_flag`` is 1 while the record is open and NULL once closed.

    ``UNIQUE (user_id, open_flag)`` is how the database itself guarantees at most one open record per user
    on SQLite, PostgreSQL and MariaDB alike: NULLs never collide in a unique index, so closed records are
    unlimited, while a second open one is a duplicate key however many clock-ins race.
    """

    __tablename__ = "sleep_records"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    clocked_in_at: Mapped[datetime]
    clocked_out_at: Mapped[datetime | None]
    duration_s: Mapped[int | None] = mapped_column(sa.Integer)  # whole seconds, set at clock-out
    open_flag: Mapped[int | None] = mapped_column(sa.SmallInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("user_id", "open_flag", name="uq_sleep_records_one_open_per_user"),
        sa.CheckConstraint(
            "(open_flag = 1 AND clocked_out_at IS NULL AND duration_s IS NULL)"
            " OR (open_flag IS NULL AND clocked_out_at IS NOT NULL AND duration_s IS NOT NULL)",
            name="open_flag_matches_state",
        ),
        sa.CheckConstraint("duration_s IS NULL OR duration_s >= 0", name="duration_not_negative"),
        # History ("my records, newest first") and the SQL feed (a user's records inside the window).
        sa.Index("ix_sleep_records_user_recent", "user_id", "clocked_in_at", "duration_s", "id"),
    )

    @property
    def is_open(self) -> bool:
        return self.clocked_out_at is None

    @property
    def state(self) -> str:
        return "clocked_in" if self.is_open else "clocked_out"

    @property
    def duration(self) -> int | None:
        return self.duration_s
