from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

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


class SleepRecordCreate(BaseModel):
    """A forgotten night, logged whole."""

    clocked_in_at: ClientTime = Field(description="Within the last 30 days.")
    clocked_out_at: ClientTime = Field(description="After clocked_in_at, and not in the future.")


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


class SleepSummary(BaseModel):
    """Completed records clocked in within the last ``days`` days."""

    days: int
    records: int
    total_seconds: int
    average_seconds: int | None = Field(description="Rounded to the second; null without records.")
    longest: SleepRecordOut | None
    shortest: SleepRecordOut | None
    average_clocked_in_at_minute_utc: int | None = Field(
        description="Circular mean of the clock-in times, in minutes after 00:00 UTC (0..1439): 23:00 and "
        "01:00 average to 0. Null without records, or when the times cancel out (e.g. 10:00 and 22:00)."
    )
    average_clocked_out_at_minute_utc: int | None = Field(
        description="Circular mean of the clock-out times, like average_clocked_in_at_minute_utc."
    )
