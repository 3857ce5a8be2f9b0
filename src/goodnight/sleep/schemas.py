from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel

from goodnight.kit.clock import to_millis, to_utc
from goodnight.kit.schema import Schema, Timestamp


def _as_utc(value: datetime) -> datetime:
    try:
        return to_millis(to_utc(value))
    except OverflowError as exc:  # e.g. year 9999 with a negative offset
        raise ValueError("is out of range") from exc


# Accepts any ISO 8601 time; one without an offset is read as UTC.
ClientTime = Annotated[datetime, AfterValidator(_as_utc)]


class ClockInRequest(BaseModel):
    clocked_in_at: ClientTime | None = None


class ClockOutRequest(BaseModel):
    clocked_out_at: ClientTime | None = None


class SleepRecordOut(Schema):
    id: uuid.UUID
    user_id: uuid.UUID
    state: Literal["clocked_in", "clocked_out"]
    clocked_in_at: Timestamp
    clocked_out_at: Timestamp | None
    duration: int | None
    created_at: Timestamp


class ClockInResponse(BaseModel):
    message: str
    sleep_record_id: uuid.UUID
    sleep_record: SleepRecordOut
    sleep_records: list[SleepRecordOut]


class ClockOutResponse(BaseModel):
    message: str
    duration: int
    sleep_record: SleepRecordOut
