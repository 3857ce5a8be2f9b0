"""GET /users/{id}/sleep_summary: how someone slept over the last few days, for them and their followers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest

from goodnight.deps import Services
from goodnight.kit.ids import new_id
from goodnight.models import SleepRecord
from goodnight.sleep.summary import circular_mean_minute, summarize
from tests.support.api import Api, Member
from tests.support.envelope import assert_error, assert_validation_error
from tests.support.nights import logged
from tests.support.statements import statements
from tests.support.times import ago

EMPTY = {
    "records": 0,
    "total_seconds": 0,
    "average_seconds": None,
    "longest": None,
    "shortest": None,
    "average_clocked_in_at_minute_utc": None,
    "average_clocked_out_at_minute_utc": None,
}


def at(days_ago: int, hour: int) -> datetime:
    """``hour`` o'clock UTC on the day ``days_ago`` days before today (UTC)."""
    today = datetime.now(UTC).date()
    return datetime.combine(today - timedelta(days=days_ago), time(hour), tzinfo=UTC)


async def summary(api: Api, viewer: Member, owner_id: str, **params: Any) -> httpx.Response:
    return await api.client.get(f"/users/{owner_id}/sleep_summary", params=params, headers=viewer.headers)


async def three_nights(api: Api, who: Member) -> list[dict[str, Any]]:
    """Bedtimes at 23:00, 01:00, 00:00 UTC (mean: midnight); wake-ups at 08:00, 06:00, 07:00 (mean: 07:00)."""
    return [
        await logged(api.client, who, at(4, 23), at(3, 8)),  # 9 h, the longest
        await logged(api.client, who, at(2, 1), at(2, 6)),  # 5 h, the shortest
        await logged(api.client, who, at(1, 0), at(1, 7)),  # 7 h
    ]


async def test_a_week_summed_up(api: Api) -> None:
    alice, bob = await api.register(), await api.register()
    await logged(api.client, alice, at(9, 22), at(8, 6))  # before the week: not counted
    longest, shortest, _ = await three_nights(api, alice)
    opened = await api.client.post("/sleep_records/clock_in", headers=alice.headers)  # open: not counted
    assert opened.status_code == 201, opened.text
    await logged(api.client, bob, at(2, 20), at(2, 23))  # someone else's

    response = await summary(api, alice, alice.id)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "days": 7,
        "records": 3,
        "total_seconds": 21 * 3600,
        "average_seconds": 7 * 3600,
        "longest": longest,
        "shortest": shortest,
        "average_clocked_in_at_minute_utc": 0,  # the clock's mean, not the number line's (noon)
        "average_clocked_out_at_minute_utc": 7 * 60,
    }


async def test_days_chooses_the_window_by_clock_in(api: Api) -> None:
    alice = await api.register()
    edge = ago(days=2)
    before = await logged(api.client, alice, edge - timedelta(hours=3), edge - timedelta(minutes=1))
    inside = await logged(api.client, alice, edge + timedelta(minutes=1), edge + timedelta(hours=9))
    await logged(api.client, alice, ago(days=29), ago(days=28, hours=16))

    two_days = (await summary(api, alice, alice.id, days=2)).json()
    assert (two_days["days"], two_days["records"], two_days["longest"]["id"]) == (2, 1, inside["id"])
    month = (await summary(api, alice, alice.id, days=30)).json()
    assert (month["days"], month["records"], month["shortest"]["id"]) == (30, 3, before["id"])
    assert (await summary(api, alice, alice.id, days=1)).json() == {"days": 1, **EMPTY}


async def test_without_records_everything_is_empty(api: Api) -> None:
    alice = await api.register()
    assert (await summary(api, alice, alice.id)).json() == {"days": 7, **EMPTY}


async def test_followers_see_it_and_nobody_else_does(api: Api) -> None:
    alice, fan, stranger = await api.register(), await api.register(), await api.register()
    await three_nights(api, alice)
    assert_error(await summary(api, fan, alice.id), 404, "not_found")
    await api.follow(fan, alice)
    mine = (await summary(api, alice, alice.id)).json()
    assert (await summary(api, fan, alice.id)).json() == mine
    assert (await summary(api, fan, alice.id.upper())).json() == mine
    assert_error(await summary(api, stranger, alice.id), 404, "not_found")
    await api.unfollow(fan, alice)
    assert_error(await summary(api, fan, alice.id), 404, "not_found")
    # Following is one way: alice does not see her fan's summary.
    await api.follow(fan, alice)
    assert_error(await summary(api, alice, fan.id), 404, "not_found")


@pytest.mark.parametrize("owner", [str(uuid.uuid4()), "not-an-id", "0" * 65])
async def test_unknown_users_are_not_found(api: Api, owner: str) -> None:
    alice = await api.register()
    error = assert_error(await summary(api, alice, owner), 404, "not_found")
    assert error["message"] == "No user with that id."


@pytest.mark.parametrize("days", [0, 31, -1, "seven", ""])
async def test_days_outside_1_to_30_are_refused(api: Api, days: object) -> None:
    alice = await api.register()
    assert_validation_error(await summary(api, alice, alice.id, days=days), "days")


async def test_a_token_is_required(api: Api) -> None:
    alice = await api.register()
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = await api.client.get(f"/users/{alice.id}/sleep_summary", headers=headers)
        assert_error(response, 401, "unauthorized")


async def test_a_summary_costs_one_query(api: Api, services: Services) -> None:
    alice, fan = await api.register(), await api.register()
    await api.follow(fan, alice)
    await three_nights(api, alice)
    for viewer, days in ((alice, 7), (fan, 30)):
        await summary(api, viewer, alice.id, days=days)  # the connection and the token are warm
        with statements(services.database.engine) as sent:
            response = await summary(api, viewer, alice.id, days=days)
        assert response.status_code == 200, response.text
        assert len(sent) == 1, sent


# --- the arithmetic -------------------------------------------------------------------------------------


def clock(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, 28, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("times", "minute"),
    [
        ([clock(23), clock(1)], 0),
        ([clock(21), clock(23), clock(1), clock(3)], 0),
        ([clock(7), clock(9)], 8 * 60),
        ([clock(23, 59)], 23 * 60 + 59),
        ([clock(23, 59, 31)], 0),  # rounded to the minute, round the clock
        ([clock(0, 0, 29)], 0),
        ([clock(0, 0, 31)], 1),
        ([clock(12), clock(12), clock(0)], 12 * 60),
        ([clock(10), clock(22)], None),  # opposite times have no mean
        ([clock(0), clock(8), clock(16)], None),  # nor do times spread evenly round the clock
        ([], None),
    ],
)
def test_clock_times_average_on_the_clock_face(times: list[datetime], minute: int | None) -> None:
    assert circular_mean_minute(times) == minute


def test_the_average_duration_is_rounded_half_up() -> None:
    def record(duration: int) -> SleepRecord:
        start = clock(1)
        end = start + timedelta(seconds=duration)
        return SleepRecord(
            id=new_id(),
            user_id=uuid.UUID(int=1),
            clocked_in_at=start,
            clocked_out_at=end,
            duration_s=duration,
            created_at=end,
        )

    assert summarize([record(1), record(2)], 7).average_seconds == 2  # 1.5
    assert summarize([record(1), record(1), record(2)], 7).average_seconds == 1  # 1.33
    assert summarize([record(2), record(2), record(1)], 7).average_seconds == 2  # 1.67
