"""Clocking in and out: a tiny state machine (clocked_in -> clocked_out) guarded by the database; and
forgotten nights, logged whole. A user's records never overlap, whichever way they were made."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.errors import BadRequest, NotFound, Unauthorized, ValidationFailed
from goodnight.jobs.events import DeletedRecord, RecordDeleted, SleepCompleted
from goodnight.jobs.publish import Events
from goodnight.kit.clock import format_utc, utcnow
from goodnight.kit.cursor import decode_cursor, encode_cursor
from goodnight.kit.ids import parse_id
from goodnight.kit.keyset import split_page
from goodnight.models import SleepRecord
from goodnight.models.sleep_record import OPEN
from goodnight.sleep import repository
from goodnight.sleep.schemas import SleepSummary
from goodnight.sleep.summary import summarize
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


# The rules every time a client sends is held to, whichever route it arrives on.


def _not_in_future(field: str, at: datetime, now: datetime) -> None:
    if at > now + CLOCK_SKEW:
        raise _invalid_time(field, "must not be in the future")


def _within_backdate(field: str, at: datetime, now: datetime) -> None:
    if at < now - MAX_BACKDATE:
        raise _invalid_time(field, "must be within the last 30 days")


def _duration(clocked_in_at: datetime, clocked_out_at: datetime) -> int:
    """Whole seconds slept; a record must end after it starts."""
    if clocked_out_at <= clocked_in_at:
        raise _invalid_time("clocked_out_at", f"must be after the clock-in time {format_utc(clocked_in_at)}")
    return int((clocked_out_at - clocked_in_at).total_seconds())


async def _lock_actor(session: AsyncSession, user_id: uuid.UUID) -> None:
    if not await users.touch(session, user_id):
        raise Unauthorized("The bearer token refers to an unknown user.")


async def clock_in(session: AsyncSession, user_id: uuid.UUID, requested: datetime | None) -> SleepRecord:
    if requested is not None:
        now = utcnow()
        _not_in_future("clocked_in_at", requested, now)
        _within_backdate("clocked_in_at", requested, now)
    await _lock_actor(session, user_id)
    # "Now" is read once we hold the user's lock: a request that queued behind another of the same user's
    # writes must not be judged by the time it arrived, before the record it waited for existed.
    now = utcnow()
    at = requested or now
    if await repository.open_record(session, user_id) is not None:
        raise AlreadyClockedIn()
    previous = await repository.latest(session, user_id)
    if previous is not None and previous.clocked_out_at is not None and at < previous.clocked_out_at:
        # Clocking in opens the newest record; an earlier night is logged whole, with POST /sleep_records.
        raise _invalid_time(
            "clocked_in_at",
            f"must be after your latest sleep record, which ends at {format_utc(previous.clocked_out_at)}; "
            "use POST /api/v1/sleep_records to add an earlier night",
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
    if requested is not None:
        _not_in_future("clocked_out_at", requested, utcnow())
    await _lock_actor(session, user_id)
    now = utcnow()  # after the lock, as in clock_in
    at = requested or now
    record = await repository.open_record(session, user_id)
    if record is None:
        raise NotClockedIn()
    duration = _duration(record.clocked_in_at, at)
    if not await repository.close(session, record.id, at, duration):
        raise NotClockedIn()
    record.clocked_out_at, record.duration_s, record.open_flag, record.updated_at = at, duration, None, now
    await _completed(session, events, record)
    return record


async def log_night(
    session: AsyncSession,
    events: Events,
    user_id: uuid.UUID,
    clocked_in_at: datetime,
    clocked_out_at: datetime,
) -> SleepRecord:
    """A forgotten night, logged whole: a completed record anywhere in the last 30 days that overlaps none of
    the user's records, open or closed."""
    now = utcnow()
    _within_backdate("clocked_in_at", clocked_in_at, now)
    _not_in_future("clocked_in_at", clocked_in_at, now)
    _not_in_future("clocked_out_at", clocked_out_at, now)
    duration = _duration(clocked_in_at, clocked_out_at)
    # Under the same per-user lock as clock-in and clock-out: of two racing nights that overlap, the second
    # to get the lock sees the first, committed, and is refused.
    await _lock_actor(session, user_id)
    now = utcnow()
    conflict = await repository.latest(session, user_id, starting_before=clocked_out_at)
    if conflict is not None and (conflict.clocked_out_at is None or conflict.clocked_out_at > clocked_in_at):
        raise _overlap(conflict, clocked_in_at)
    record = SleepRecord(
        user_id=user_id,
        clocked_in_at=clocked_in_at,
        clocked_out_at=clocked_out_at,
        duration_s=duration,
        open_flag=None,
        created_at=now,
        updated_at=now,
    )
    session.add(record)
    await session.flush()
    await _completed(session, events, record)
    return record


def _overlap(conflict: SleepRecord, clocked_in_at: datetime) -> ValidationFailed:
    """Names the field that lies inside the other record (the clock-out, when the new night encloses it)."""
    field = "clocked_in_at" if conflict.clocked_in_at <= clocked_in_at else "clocked_out_at"
    began = format_utc(conflict.clocked_in_at)
    if conflict.clocked_out_at is None:
        return _invalid_time(field, f"overlaps your open sleep record, clocked in at {began}")
    return _invalid_time(
        field, f"overlaps your sleep record from {began} to {format_utc(conflict.clocked_out_at)}"
    )


async def _completed(session: AsyncSession, events: Events, record: SleepRecord) -> None:
    """A completed record enters its author's followers' feeds, in the transaction that completes it."""
    await events.publish(session, SleepCompleted(record.id))


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


async def summary(session: AsyncSession, viewer_id: uuid.UUID, raw_owner_id: str, days: int) -> SleepSummary:
    """The owner's last ``days`` days, seen by the owner or a follower (anyone else is told "not found", as
    for a record: whether someone sleeps is theirs and their followers' to know)."""
    owner_id = parse_id(raw_owner_id)
    since = utcnow() - timedelta(days=days)
    records = await repository.completed_since(session, owner_id, viewer_id, since) if owner_id else None
    if records is None:
        raise NotFound("No user with that id.")
    return summarize(records, days)


async def delete(session: AsyncSession, events: Events, user_id: uuid.UUID, raw_id: str) -> None:
    record_id = parse_id(raw_id)
    if record_id is None:
        raise NotFound("No sleep record with that id.")
    await _lock_actor(session, user_id)
    record = await repository.own(session, record_id, user_id)
    if record is None:
        raise NotFound("No sleep record with that id.")
    await repository.delete(session, record.id)
    # Applied right after commit too (a tombstone), so no feed shows the record once the delete returns.
    await events.publish(session, RecordDeleted(deleted_record(record)), apply_now=True)


def deleted_record(record: SleepRecord) -> DeletedRecord:
    """What the feeds need to know of a deleted record: where its entries are, its tombstone's day."""
    return DeletedRecord(record.id, record.user_id, record.clocked_in_at, record.duration_s)
