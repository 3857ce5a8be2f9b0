"""Clocking in and out: a tiny state machine (clocked_in -> clocked_out) guarded by the database."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.errors import BadRequest, NotFound, Unauthorized, ValidationFailed
from goodnight.jobs.events import Events
from goodnight.jobs.outbox import EventKind
from goodnight.kit.clock import format_utc, utcnow
from goodnight.kit.cursor import decode_cursor, encode_cursor
from goodnight.kit.ids import parse_id
from goodnight.kit.keyset import split_page
from goodnight.models import SleepRecord
from goodnight.models.sleep_record import OPEN
from goodnight.sleep import repository
from goodnight.users import repository as users

# Clients' clocks drift; a time this far ahead of ours is still "now".
CLOCK_SKEW = timedelta(seconds=60)
# How far back a forgotten clock-in may be recorded.
MAX_BACKDATE = timedelta(days=30)
HISTORY_PREVIEW = 20


class AlreadyClockedIn(BadRequest):
    code = "already_clocked_in"
    default_message = "You are already clocked in; clock out first."


class NotClockedIn(BadRequest):
    code = "not_clocked_in"
    default_message = "You are not clocked in."


def _invalid_time(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details=[{"field": field, "message": message}])


async def _lock_actor(session: AsyncSession, user_id: uuid.UUID) -> None:
    if user_id not in await users.lock_for_write(session, {user_id}):
        raise Unauthorized("The bearer token refers to an unknown user.")
    await users.touch(session, user_id)


async def clock_in(session: AsyncSession, user_id: uuid.UUID, requested: datetime | None) -> SleepRecord:
    if requested is not None:
        now = utcnow()
        if requested > now + CLOCK_SKEW:
            raise _invalid_time("clocked_in_at", "must not be in the future")
        if requested < now - MAX_BACKDATE:
            raise _invalid_time("clocked_in_at", "must be within the last 30 days")
    await _lock_actor(session, user_id)
    # "Now" is read once we hold the user's lock: a request that queued behind another of the same user's
    # writes must not be judged by the time it arrived, before the record it waited for existed.
    now = utcnow()
    at = requested or now
    if await repository.open_record(session, user_id) is not None:
        raise AlreadyClockedIn()
    previous = await repository.latest(session, user_id)
    if previous is not None and previous.clocked_out_at is not None and at < previous.clocked_out_at:
        raise _invalid_time(
            "clocked_in_at", f"overlaps your sleep record that ends at {format_utc(previous.clocked_out_at)}"
        )
    record = SleepRecord(user_id=user_id, clocked_in_at=at, open_flag=OPEN, created_at=now, updated_at=now)
    session.add(record)
    try:
        await session.flush()
    except IntegrityError as exc:  # the unique (user_id, open_flag) index: another clock-in won the race
        raise AlreadyClockedIn() from exc
    return record


async def clock_out(
    session: AsyncSession, events: Events, user_id: uuid.UUID, requested: datetime | None
) -> SleepRecord:
    if requested is not None and requested > utcnow() + CLOCK_SKEW:
        raise _invalid_time("clocked_out_at", "must not be in the future")
    await _lock_actor(session, user_id)
    now = utcnow()  # after the lock, as in clock_in
    at = requested or now
    record = await repository.open_record(session, user_id)
    if record is None:
        raise NotClockedIn()
    if at <= record.clocked_in_at:
        raise _invalid_time(
            "clocked_out_at", f"must be after the clock-in time {format_utc(record.clocked_in_at)}"
        )
    duration = int((at - record.clocked_in_at).total_seconds())
    if not await repository.close(session, record.id, at, duration):
        raise NotClockedIn()
    record.clocked_out_at, record.duration_s, record.open_flag, record.updated_at = at, duration, None, now
    await events.publish(session, EventKind.SLEEP_COMPLETED, {"record_id": str(record.id)})
    return record


async def history(
    session: AsyncSession, user_id: uuid.UUID, *, limit: int, cursor: str | None = None
) -> tuple[list[SleepRecord], str | None]:
    after = None
    if cursor is not None:
        after = decode_cursor(cursor, (datetime, uuid.UUID))
    rows = await repository.history(session, user_id, limit=limit, after=after)
    page, more = split_page(rows, limit)
    next_cursor = encode_cursor(page[-1].clocked_in_at, page[-1].id) if more else None
    return list(page), next_cursor


async def get_visible(session: AsyncSession, viewer_id: uuid.UUID, raw_id: str) -> SleepRecord:
    record_id = parse_id(raw_id)
    record = await repository.visible_to(session, record_id, viewer_id) if record_id else None
    if record is None:
        raise NotFound("No sleep record with that id.")
    return record


async def delete(session: AsyncSession, events: Events, user_id: uuid.UUID, raw_id: str) -> None:
    record_id = parse_id(raw_id)
    if record_id is None:
        raise NotFound("No sleep record with that id.")
    await _lock_actor(session, user_id)
    record = await repository.own(session, record_id, user_id)
    if record is None:
        raise NotFound("No sleep record with that id.")
    await repository.delete(session, record.id)
    payload = {
        "record_id": str(record.id),
        "user_id": str(user_id),
        "clocked_in_at": record.clocked_in_at.isoformat(),
        "duration": record.duration_s,
    }
    # Applied right after commit too (a tombstone), so no feed shows the record once the delete returns.
    await events.publish(session, EventKind.RECORD_DELETED, payload, apply_now=True)
