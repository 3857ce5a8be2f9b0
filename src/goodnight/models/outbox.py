from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from goodnight.db import Base
from goodnight.kit.clock import utcnow

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class OutboxEvent(Base):
    """Work to do because of a committed change, written in the same transaction as the change.

    Workers claim rows by pushing ``claimed_until`` into the future (a lease); a worker that dies simply lets
    its lease run out and another one claims the row again. Done rows are deleted; rows that keep failing are
    parked with ``dead_at`` set.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    dead_at: Mapped[datetime | None]
    # Who wrote the event: the request id and, when traced, the W3C traceparent (observability.event_context).
    context: Mapped[dict[str, str] | None] = mapped_column(sa.JSON(none_as_null=True))

    __table_args__ = (sa.Index("ix_outbox_ready", "dead_at", "available_at", "id"),)
