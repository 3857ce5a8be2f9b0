from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from goodnight.deps import AUTHENTICATED, CurrentUserId, SessionDep, WriteSessionDep, services_of
from goodnight.errors import error_responses
from goodnight.kit.schema import DEFAULT_LIMIT, Cursor, Limit, Page, Pagination
from goodnight.models import SleepRecord
from goodnight.sleep import service
from goodnight.sleep.schemas import (
    ClockInRequest,
    ClockInResponse,
    ClockOutRequest,
    ClockOutResponse,
    SleepRecordCreate,
    SleepRecordOut,
    SleepSummary,
)

router = APIRouter(prefix="/sleep_records", tags=["sleep records"], dependencies=AUTHENTICATED)
# A user's summary lives under /users/{user_id}, beside their followers and followings.
summary_router = APIRouter(prefix="/users", tags=["sleep records"], dependencies=AUTHENTICATED)


def _out(record: SleepRecord) -> SleepRecordOut:
    return SleepRecordOut.model_validate(record)


@router.post(
    "/clock_in",
    status_code=status.HTTP_201_CREATED,
    response_model=ClockInResponse,
    responses=error_responses(400, 401, 413),
)
async def clock_in(
    session: WriteSessionDep, me: CurrentUserId, data: ClockInRequest | None = None
) -> ClockInResponse:
    """Go to bed: open a sleep record, now or at a back-dated `clocked_in_at` (up to 30 days ago)."""
    record = await service.clock_in(session, me, data.clocked_in_at if data else None)
    recent, _ = await service.history(session, me, limit=service.HISTORY_PREVIEW)
    return ClockInResponse(
        message="Clock in successful",
        sleep_record_id=record.id,
        sleep_record=_out(record),
        sleep_records=[_out(item) for item in recent],
    )


@router.post("/clock_out", response_model=ClockOutResponse, responses=error_responses(400, 401, 413))
async def clock_out(
    session: WriteSessionDep, request: Request, me: CurrentUserId, data: ClockOutRequest | None = None
) -> ClockOutResponse:
    """Wake up: close the open sleep record, now or at `clocked_out_at`."""
    events = services_of(request).events
    record = await service.clock_out(session, events, me, data.clocked_out_at if data else None)
    duration = record.duration_s or 0
    return ClockOutResponse(message="Clock out successful", duration=duration, sleep_record=_out(record))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SleepRecordOut,
    responses=error_responses(401, 413),
)
async def log_night(
    data: SleepRecordCreate, session: WriteSessionDep, request: Request, me: CurrentUserId
) -> SleepRecordOut:
    """Log a forgotten night: a completed record anywhere in the last 30 days, overlapping none of yours
    (open or closed). It reaches your followers' feeds like a clock-out."""
    events = services_of(request).events
    return _out(await service.log_night(session, events, me, data.clocked_in_at, data.clocked_out_at))


@router.get("", response_model=Page[SleepRecordOut], responses=error_responses(401))
async def list_own(
    session: SessionDep, me: CurrentUserId, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[SleepRecordOut]:
    """Your own sleep records, newest clock-in first."""
    records, next_cursor = await service.history(session, me, limit=limit, cursor=cursor)
    return Page(data=[_out(item) for item in records], pagination=Pagination(next_cursor=next_cursor))


@router.get("/{record_id}", response_model=SleepRecordOut, responses=error_responses(401, 404))
async def get_one(record_id: str, session: SessionDep, me: CurrentUserId) -> SleepRecordOut:
    """One of your records, or a record of someone you follow."""
    return _out(await service.get_visible(session, me, record_id))


@router.delete(
    "/{record_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 404),
)
async def delete(record_id: str, session: WriteSessionDep, request: Request, me: CurrentUserId) -> Response:
    """Delete one of your own records; it leaves every feed at once."""
    await service.delete(session, services_of(request).events, me, record_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@summary_router.get(
    "/{user_id}/sleep_summary", response_model=SleepSummary, responses=error_responses(401, 404)
)
async def sleep_summary(
    user_id: str,
    session: SessionDep,
    me: CurrentUserId,
    days: Annotated[int, Query(ge=1, le=30, description="The window in days, 1..30.")] = 7,
) -> SleepSummary:
    """How a user slept over the last `days` days: completed records clocked in within the window. Yours,
    or those of someone you follow."""
    return await service.summary(session, me, user_id, days)
