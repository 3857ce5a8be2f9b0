"""Logging a forgotten night: POST /sleep_records creates a completed record anywhere in the last 30 days."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from goodnight.deps import Services
from goodnight.jobs.outbox import EventKind
from goodnight.models import SleepRecord
from tests.app.test_concurrency import race, tally
from tests.support.api import Api, Member
from tests.support.apps import AppTimeline
from tests.support.envelope import assert_error, assert_validation_error
from tests.support.nights import log_night, logged
from tests.support.outbox import outbox_rows
from tests.support.times import ago, iso
from tests.timeline.test_timeline import same_feed, warm


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


async def history(api: Api, who: Member) -> list[dict[str, Any]]:
    response = await api.client.get("/sleep_records", headers=who.headers)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


async def records_of(services: Services, who: Member) -> int:
    async with services.database.reader() as session:
        count = await session.scalar(
            sa.select(sa.func.count())
            .select_from(SleepRecord)
            .where(SleepRecord.user_id == uuid.UUID(who.id))
        )
    return int(count or 0)


# --- success --------------------------------------------------------------------------------------------


async def test_tuesday_can_be_logged_after_wednesday(api: Api) -> None:
    alice = await api.register()
    wednesday = ago(days=1, hours=2)
    later = await api.sleep(alice, iso(wednesday), iso(wednesday + timedelta(hours=8)))
    tuesday = wednesday - timedelta(days=1)
    end = tuesday + timedelta(hours=7, minutes=30, seconds=59, milliseconds=900)

    response = await log_night(api.client, alice, tuesday, end)

    assert response.status_code == 201, response.text
    record = response.json()
    assert {key: value for key, value in record.items() if key not in ("id", "created_at")} == {
        "user_id": alice.id,
        "state": "clocked_out",
        "clocked_in_at": iso(tuesday),
        "clocked_out_at": iso(end),
        "duration": 7 * 3600 + 30 * 60 + 59,  # whole seconds, floored, as for a clock-out
    }
    assert ids(await history(api, alice)) == [later["id"], record["id"]]
    fetched = await api.client.get(f"/sleep_records/{record['id']}", headers=alice.headers)
    assert fetched.json() == record


async def test_nights_may_touch_their_neighbours(api: Api) -> None:
    alice = await api.register()
    start = ago(days=3)
    middle = await api.sleep(alice, iso(start), iso(start + timedelta(hours=8)))
    before = await logged(api.client, alice, start - timedelta(hours=6), start)
    after = await logged(api.client, alice, start + timedelta(hours=8), start + timedelta(hours=9))
    assert ids(await history(api, alice)) == [after["id"], middle["id"], before["id"]]


async def test_a_night_before_an_open_record_is_logged_while_clocked_in(api: Api) -> None:
    alice = await api.register()
    bedtime = ago(hours=2)
    opened = await api.client.post(
        "/sleep_records/clock_in", json={"clocked_in_at": iso(bedtime)}, headers=alice.headers
    )
    assert opened.status_code == 201, opened.text
    await logged(api.client, alice, bedtime - timedelta(hours=20), bedtime)
    closed = await api.client.post("/sleep_records/clock_out", headers=alice.headers)
    assert closed.status_code == 200, closed.text


async def test_the_oldest_night_allowed_starts_30_days_ago(api: Api) -> None:
    alice = await api.register()
    start = ago(days=30) + timedelta(minutes=1)
    await logged(api.client, alice, start, start + timedelta(hours=8))


async def test_the_night_reaches_followers_feeds_at_once_in_sql(api: Api) -> None:
    reader, alice = await api.register(), await api.register()
    await api.follow(reader, alice)
    start = ago(days=2)
    record = await logged(api.client, alice, start, start + timedelta(seconds=25954))
    [item] = (await api.feed(reader)).json()["data"]
    assert item["id"] == record["id"]
    assert item["humanized_duration"] == "7 hours, 12 minutes, and 34 seconds"


async def test_the_night_is_fanned_out_like_a_clock_out(
    api: Api, timeline_api: Api, timeline: AppTimeline, services: Services
) -> None:
    reader, alice = await timeline_api.register(), await timeline_api.register()
    await timeline_api.follow(reader, alice)
    await warm(timeline_api, timeline, reader)
    await timeline.worker.drain()
    start = ago(days=4)
    await timeline_api.sleep(alice, iso(start + timedelta(days=1)), iso(start + timedelta(days=1, hours=6)))
    record = await logged(timeline_api.client, alice, start, start + timedelta(hours=9))

    # The same event a clock-out writes, committed with the record.
    events = [(row.kind, row.payload) for row in await outbox_rows(services.database)]
    completed = [payload["record_id"] for kind, payload in events if kind == EventKind.SLEEP_COMPLETED]
    assert completed[-1] == record["id"]
    assert len(completed) == 2
    await timeline.worker.drain()
    feed = await same_feed(api, timeline_api, timeline, reader, per_page=1)
    assert feed[0] == record["id"]


async def test_a_refused_night_leaves_no_record_and_no_event(
    timeline_api: Api, timeline: AppTimeline, services: Services
) -> None:
    alice = await timeline_api.register()
    start = ago(days=1)
    await timeline_api.sleep(alice, iso(start), iso(start + timedelta(hours=8)))
    await timeline.worker.drain()
    response = await log_night(
        timeline_api.client, alice, start + timedelta(hours=1), start + timedelta(hours=9)
    )
    assert_validation_error(response, "clocked_in_at")
    assert await outbox_rows(services.database) == []
    assert await records_of(services, alice) == 1


# --- errors ---------------------------------------------------------------------------------------------

EXISTING = timedelta(hours=8)  # the existing record: [start, start + 8 h)


@pytest.mark.parametrize(
    ("offsets", "field"),
    [
        ((-2, 1), "clocked_out_at"),  # ends inside it
        ((1, 10), "clocked_in_at"),  # starts inside it
        ((-1, 9), "clocked_out_at"),  # encloses it
        ((0, 8), "clocked_in_at"),  # the same night again
        ((2, 3), "clocked_in_at"),  # inside it
    ],
    ids=["ends-inside", "starts-inside", "encloses", "same", "inside"],
)
async def test_a_night_overlapping_a_record_is_refused(
    api: Api, offsets: tuple[float, float], field: str
) -> None:
    alice = await api.register()
    start = ago(days=2)
    await api.sleep(alice, iso(start), iso(start + EXISTING))
    begin, end = (start + timedelta(hours=offset) for offset in offsets)

    error = assert_validation_error(await log_night(api.client, alice, begin, end), field)

    expected = f"overlaps your sleep record from {iso(start)} to {iso(start + EXISTING)}"
    assert error["message"] == f"{field}: {expected}"
    assert error["details"] == [{"field": field, "message": expected}]


async def test_a_night_overlapping_the_open_record_is_refused(api: Api) -> None:
    alice = await api.register()
    bedtime = ago(hours=3)
    await api.client.post(
        "/sleep_records/clock_in", json={"clocked_in_at": iso(bedtime)}, headers=alice.headers
    )
    for begin, end in (
        (bedtime - timedelta(hours=1), bedtime + timedelta(minutes=1)),
        (bedtime, ago(hours=1)),
    ):
        error = assert_validation_error(await log_night(api.client, alice, begin, end))
        assert error["message"].endswith(f"overlaps your open sleep record, clocked in at {iso(bedtime)}")


def _times(case: str) -> tuple[datetime | str | None, datetime | str | None]:
    start = ago(days=1)
    return {
        "ends in the future": (ago(hours=1), ago(minutes=-5)),
        "starts in the future": (ago(minutes=-5), ago(minutes=-65)),
        "starts more than 30 days ago": (ago(days=30, minutes=1), ago(days=29, hours=16)),
        "ends when it starts": (start, start),
        "ends before it starts": (start, start - timedelta(hours=1)),
        "not a time": ("yesterday", start),
        "out of range": (start, "9999-12-31T23:59:59-14:00"),
        "no clock-in": (None, start),
        "no clock-out": (start, None),
    }[case]


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("ends in the future", "clocked_out_at"),
        ("starts in the future", "clocked_in_at"),
        ("starts more than 30 days ago", "clocked_in_at"),
        ("ends when it starts", "clocked_out_at"),
        ("ends before it starts", "clocked_out_at"),
        ("not a time", "clocked_in_at"),
        ("out of range", "clocked_out_at"),
        ("no clock-in", "clocked_in_at"),
        ("no clock-out", "clocked_out_at"),
    ],
)
async def test_times_are_held_to_the_clock_rules(api: Api, services: Services, case: str, field: str) -> None:
    alice = await api.register()
    start, end = _times(case)
    body = {
        name: value if isinstance(value, str) else iso(value)
        for name, value in (("clocked_in_at", start), ("clocked_out_at", end))
        if value is not None
    }
    response = await api.client.post("/sleep_records", json=body, headers=alice.headers)
    assert_validation_error(response, field)
    assert await records_of(services, alice) == 0


async def test_a_body_is_required(api: Api) -> None:
    alice = await api.register()
    for body in ({}, None, []):
        response = await api.client.post("/sleep_records", json=body, headers=alice.headers)
        assert_error(response, 422, "validation_error")


async def test_a_token_is_required(api: Api) -> None:
    start = ago(days=1)
    body = {"clocked_in_at": iso(start), "clocked_out_at": iso(start + EXISTING)}
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        assert_error(await api.client.post("/sleep_records", json=body, headers=headers), 401, "unauthorized")


async def test_clock_in_says_truthfully_why_it_refuses_an_earlier_time(api: Api) -> None:
    alice = await api.register()
    start = ago(days=2)
    await api.sleep(alice, iso(start), iso(start + EXISTING))
    earlier = await api.client.post(
        "/sleep_records/clock_in",
        json={"clocked_in_at": iso(start - timedelta(days=1))},
        headers=alice.headers,
    )
    error = assert_validation_error(earlier, "clocked_in_at")
    assert error["message"] == (
        f"clocked_in_at: must be after your latest sleep record, which ends at {iso(start + EXISTING)}; "
        "use POST /api/v1/sleep_records to add an earlier night"
    )


# --- races ----------------------------------------------------------------------------------------------


async def test_of_racing_overlapping_nights_exactly_one_wins(api: Api, services: Services) -> None:
    alice = await api.register()
    base = ago(days=5)
    # Each night overlaps every other one: they all contain base + 5 h.
    nights = [
        (base + timedelta(minutes=10 * n), base + timedelta(hours=6, minutes=10 * n)) for n in range(12)
    ]

    responses = await race(log_night(api.client, alice, start, end) for start, end in nights)

    assert tally(responses) == Counter({(201, None): 1, (422, "validation_error"): 11})
    assert await records_of(services, alice) == 1


async def test_a_night_racing_a_clock_in_inside_it_one_wins(api: Api, services: Services) -> None:
    alice = await api.register()
    start = ago(hours=9)
    clock_in = api.client.post(
        "/sleep_records/clock_in",
        json={"clocked_in_at": iso(start + timedelta(hours=2))},
        headers=alice.headers,
    )

    responses = await race([log_night(api.client, alice, start, ago(hours=1)), clock_in])

    assert tally(responses) == Counter({(201, None): 1, (422, "validation_error"): 1})
    assert await records_of(services, alice) == 1
