"""The transactional outbox: events written with the data, claimed by workers under a lease.

Delivery is at least once: a worker that dies mid-batch lets its lease run out and the rows are claimed
again, so every handler must be idempotent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.kit.clock import to_utc, utcnow
from goodnight.models import OutboxEvent
from goodnight.observability import event_context

MAX_ERROR_LENGTH = 2000
MAX_BACKOFF_SECONDS = 300.0


class EventKind(StrEnum):
    SLEEP_COMPLETED = "sleep_completed"
    RECORD_DELETED = "record_deleted"
    FOLLOWED = "followed"
    UNFOLLOWED = "unfollowed"
    NAME_CHANGED = "name_changed"
    ACCOUNT_DELETED = "account_deleted"
    DELETED_ACCOUNT_FOLLOWERS = "deleted_account_followers"


# Events that leave every page exact however late they are applied (what they clean up is hidden already),
# so they do not count as lag: a deleted account with many followers keeps the timelines served from Redis.
LAG_FREE = (EventKind.DELETED_ACCOUNT_FOLLOWERS.value,)


async def enqueue(session: AsyncSession, kind: EventKind, payload: dict[str, Any]) -> None:
    """Add an event to the caller's transaction: it exists if and only if the change commits."""
    now = utcnow()
    context = event_context.capture()
    session.add(
        OutboxEvent(
            kind=kind.value, payload=payload, created_at=now, available_at=now, attempts=0, context=context
        )
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    # The writing request's id and trace context, if any (older events have none).
    context: dict[str, str] | None = None
    created_at: datetime | None = None  # when the event was written (with the change that caused it)


async def claim(session: AsyncSession, *, limit: int, lease: timedelta) -> list[Claimed]:
    """Lease up to ``limit`` ready events to this worker (commit right after, before working on them).

    ``SKIP LOCKED`` lets any number of workers claim concurrently without waiting on each other; SQLite has
    no row locks, but its writers are serialised (BEGIN IMMEDIATE), which gives the same exclusivity.
    """
    now = utcnow()
    ready = (
        sa.select(OutboxEvent.id)
        .where(
            OutboxEvent.dead_at.is_(None),
            OutboxEvent.available_at <= now,
            sa.or_(OutboxEvent.claimed_until.is_(None), OutboxEvent.claimed_until < now),
        )
        # The order of ix_outbox_ready itself. Ordering by id alone makes MariaDB sort, and to sort it reads
        # and locks every ready row, so a concurrent claim would SKIP LOCKED past the whole outbox.
        .order_by(OutboxEvent.available_at, OutboxEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(await session.scalars(ready))
    if not ids:
        return []
    await session.execute(
        sa.update(OutboxEvent)
        .where(OutboxEvent.id.in_(ids))
        .values(claimed_until=now + lease, attempts=OutboxEvent.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    event = OutboxEvent
    rows = await session.execute(
        sa.select(event.id, event.kind, event.payload, event.attempts, event.context, event.created_at)
        .where(event.id.in_(ids))
        .order_by(event.id)
    )
    return [
        Claimed(id=row[0], kind=row[1], payload=row[2], attempts=row[3], context=row[4], created_at=row[5])
        for row in rows
    ]


async def complete(session: AsyncSession, ids: list[int]) -> None:
    if ids:
        await session.execute(
            sa.delete(OutboxEvent).where(OutboxEvent.id.in_(ids)).execution_options(synchronize_session=False)
        )


def backoff(attempts: int) -> timedelta:
    """Exponential with full jitter: 0.5 s, 1 s, 2 s ... capped at 5 minutes."""
    ceiling = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** max(attempts - 1, 0))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311  (jitter, not secrets)


async def fail(session: AsyncSession, event: Claimed, error: str, *, max_attempts: int) -> bool:
    """Record a failure: retry later, or park the event as dead. Returns True when it was parked."""
    now = utcnow()
    dead = event.attempts >= max_attempts
    values: dict[str, Any] = {"claimed_until": None, "last_error": error[:MAX_ERROR_LENGTH]}
    if dead:
        values["dead_at"] = now
    else:
        values["available_at"] = now + backoff(event.attempts)
    await session.execute(
        sa.update(OutboxEvent)
        .where(OutboxEvent.id == event.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return dead


async def release(session: AsyncSession, event: Claimed, error: str, *, delay: timedelta) -> None:
    """Hand an event back without spending an attempt: what stopped it was the infrastructure (Redis away),
    not the event, and an outage of any length must not park healthy events as dead."""
    await session.execute(
        sa.update(OutboxEvent)
        .where(OutboxEvent.id == event.id)
        .values(
            claimed_until=None,
            available_at=utcnow() + delay,
            attempts=OutboxEvent.attempts - 1,
            last_error=error[:MAX_ERROR_LENGTH],
        )
        .execution_options(synchronize_session=False)
    )


async def oldest_pending_age(session: AsyncSession) -> float | None:
    """Seconds since the oldest event still waiting was written (``LAG_FREE`` ones aside); None when the
    outbox is caught up."""
    oldest = await session.scalar(
        sa.select(OutboxEvent.created_at)
        .where(OutboxEvent.dead_at.is_(None), OutboxEvent.kind.not_in(LAG_FREE))
        .order_by(OutboxEvent.id)
        .limit(1)
    )
    return None if oldest is None else (utcnow() - oldest).total_seconds()


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    pending: int
    in_flight: int
    dead: int
    oldest_age_seconds: float | None


async def status(session: AsyncSession) -> OutboxStatus:
    now = utcnow()
    live = OutboxEvent.dead_at.is_(None)
    leased = sa.and_(live, OutboxEvent.claimed_until.is_not(None), OutboxEvent.claimed_until >= now)
    # SUM(CASE ...) rather than COUNT(*) FILTER: MariaDB has no FILTER clause.
    row = (
        await session.execute(
            sa.select(
                _count_where(live),
                _count_where(leased),
                _count_where(OutboxEvent.dead_at.is_not(None)),
                sa.func.min(sa.case((live, OutboxEvent.created_at), else_=None)).label("oldest"),
            )
        )
    ).one()
    total_live, in_flight, dead, oldest = (int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), row[3])
    oldest_at = _as_time(oldest)
    return OutboxStatus(
        pending=total_live - in_flight,
        in_flight=in_flight,
        dead=dead,
        oldest_age_seconds=None if oldest_at is None else round((now - oldest_at).total_seconds(), 3),
    )


def _count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((condition, 1), else_=0))


def _as_time(value: Any) -> datetime | None:
    # MIN over a CASE loses the column type on some backends (SQLite hands back the stored text).
    if value is None or isinstance(value, datetime):
        return None if value is None else to_utc(value)
    return to_utc(datetime.fromisoformat(str(value)))


async def retry_dead(session: AsyncSession) -> int:
    """Give every parked event a fresh set of attempts; returns how many."""
    result = await session.execute(
        sa.update(OutboxEvent)
        .where(OutboxEvent.dead_at.is_not(None))
        .values(dead_at=None, attempts=0, available_at=utcnow(), claimed_until=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- Operator commands: looking at parked events one by one, and reviving one of them. ---


@dataclass(frozen=True, slots=True)
class DeadEvent:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    # The outbox records no attempt times of its own: the first attempt follows the write within a poll (or
    # is the writing request's inline apply), and the last one failed when the event was parked.
    first_attempt_at: datetime
    last_attempt_at: datetime
    last_error: str | None


async def dead_events(session: AsyncSession, *, limit: int) -> tuple[int, list[DeadEvent]]:
    """How many events are parked, and the ``limit`` most recently parked of them, newest first."""
    parked = OutboxEvent.dead_at.is_not(None)
    total = await session.scalar(sa.select(sa.func.count()).select_from(OutboxEvent).where(parked))
    rows = await session.scalars(
        sa.select(OutboxEvent)
        .where(parked)
        .order_by(OutboxEvent.dead_at.desc(), OutboxEvent.id.desc())
        .limit(limit)
    )
    events = [
        DeadEvent(
            id=row.id,
            kind=row.kind,
            payload=row.payload,
            attempts=row.attempts,
            first_attempt_at=row.created_at,
            last_attempt_at=row.dead_at or row.created_at,
            last_error=row.last_error,
        )
        for row in rows
    ]
    return int(total or 0), events


class RetryOutcome(StrEnum):
    QUEUED = "queued"
    NOT_FOUND = "not_found"
    NOT_DEAD = "not_dead"


async def retry_dead_event(session: AsyncSession, event_id: int) -> RetryOutcome:
    """Give one parked event a fresh set of attempts, as ``retry_dead`` does for all of them."""
    result = await session.execute(
        sa.update(OutboxEvent)
        .where(OutboxEvent.id == event_id, OutboxEvent.dead_at.is_not(None))
        .values(dead_at=None, attempts=0, available_at=utcnow(), claimed_until=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        return RetryOutcome.QUEUED
    exists = await session.scalar(sa.select(OutboxEvent.id).where(OutboxEvent.id == event_id))
    return RetryOutcome.NOT_DEAD if exists is not None else RetryOutcome.NOT_FOUND
