"""The auth package's queries: the credentials a login checks, and the token_revocations table."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.auth.revocation import Revocation
from goodnight.models import TokenRevocation, User

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def credentials(session: AsyncSession, username: str) -> tuple[uuid.UUID, str] | None:
    """The id and password hash of the user with this name, in any letter case."""
    row = (
        await session.execute(
            sa.select(User.id, User.password_hash).where(User.username_key == username.lower())
        )
    ).first()
    return None if row is None else (row.id, row.password_hash)


def add(session: AsyncSession, revocation: Revocation) -> None:
    issued_before = None
    if revocation.issued_before_ms is not None:
        issued_before = _EPOCH + timedelta(milliseconds=revocation.issued_before_ms)
    session.add(
        TokenRevocation(
            user_id=revocation.user_id,
            token_id=revocation.token_id,
            issued_before=issued_before,
            expires_at=datetime.fromtimestamp(revocation.expires_at, UTC),
        )
    )


async def newest_id(session: AsyncSession) -> int:
    return await session.scalar(sa.select(sa.func.max(TokenRevocation.id))) or 0


async def in_force(
    session: AsyncSession, now: datetime, *, up_to: int, recent_from: int
) -> list[tuple[int, Revocation]]:
    """Every row up to ``up_to`` that still matches live tokens, plus every row from ``recent_from`` on
    (whose ids tell which newer ones are still missing)."""
    return await _rows(
        session,
        sa.and_(
            TokenRevocation.id <= up_to,
            sa.or_(TokenRevocation.expires_at > now, TokenRevocation.id >= recent_from),
        ),
    )


async def after(session: AsyncSession, seen: int, missing: Collection[int]) -> list[tuple[int, Revocation]]:
    """Rows past ``seen``, and any of the ``missing`` ids that have appeared since: one primary-key range
    (plus a few point look-ups), empty in the common case."""
    newer = TokenRevocation.id > seen
    return await _rows(session, sa.or_(newer, TokenRevocation.id.in_(missing)) if missing else newer)


async def delete_expired(session: AsyncSession, before: datetime) -> int:
    result = await session.execute(sa.delete(TokenRevocation).where(TokenRevocation.expires_at < before))
    deleted: int = getattr(result, "rowcount", 0) or 0
    return deleted


async def _rows(session: AsyncSession, condition: sa.ColumnElement[bool]) -> list[tuple[int, Revocation]]:
    rows = await session.execute(
        sa.select(
            TokenRevocation.id,
            TokenRevocation.user_id,
            TokenRevocation.token_id,
            TokenRevocation.issued_before,
            TokenRevocation.expires_at,
        )
        .where(condition)
        .order_by(TokenRevocation.id)
    )
    return [
        (row_id, Revocation(user_id, token_id, _millis(issued_before), expires_at.timestamp()))
        for row_id, user_id, token_id, issued_before, expires_at in rows
    ]


def _millis(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // timedelta(milliseconds=1)
