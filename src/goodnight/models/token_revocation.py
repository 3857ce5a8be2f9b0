from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from goodnight.db import Base
from goodnight.kit.clock import utcnow
from goodnight.models.outbox import BigId


class TokenRevocation(Base):
    """A bearer token, or every token a user was issued before a moment, that must no longer be accepted.

    Append-only: every server process polls for rows past the highest ``id`` it has seen and keeps them in
    memory (``goodnight.auth.revocation_feed``). ``user_id`` has no foreign key on purpose: revoking the
    tokens of a deleted account must outlive the account's row.
    """

    __tablename__ = "token_revocations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID]
    # One token (its ``jti``), or NULL with ``issued_before`` set: every token issued before that moment.
    token_id: Mapped[str | None] = mapped_column(sa.String(64))
    issued_before: Mapped[datetime | None]
    # Past this, no token the row matches can still be valid: the row can be forgotten.
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        sa.CheckConstraint(
            "(token_id IS NOT NULL AND issued_before IS NULL)"
            " OR (token_id IS NULL AND issued_before IS NOT NULL)",
            name="one_token_or_a_cutoff",
        ),
        # Loading what is still in force at start-up, and deleting what has expired.
        sa.Index("ix_token_revocations_expires_at", "expires_at"),
    )
