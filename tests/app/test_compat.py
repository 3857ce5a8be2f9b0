"""Drop-in compatibility with the original app's clients: offset paging, messages, durations, docs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import yaml

from goodnight.kit.humanize import humanize_duration
from tests.support.api import PASSWORD, Api, Member
from tests.support.apps import AppTimeline
from tests.support.envelope import assert_error
from tests.support.times import ago, iso
from tests.timeline.test_timeline import warm

# --- humanized_duration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        # The issue's table: Rails' ActiveSupport::Duration#inspect.
        (525, "8 minutes and 45 seconds"),
        (27000, "7 hours and 30 minutes"),
        (25954, "7 hours, 12 minutes, and 34 seconds"),
        (3661, "1 hour, 1 minute, and 1 second"),
        (32401, "9 hours and 1 second"),
        (61, "1 minute and 1 second"),
        (3600, "1 hour"),
        (0, "0 seconds"),
        # Weeks and days, the larger parts.
        (1, "1 second"),
        (59, "59 seconds"),
        (86400, "1 day"),
        (2 * 86400 + 1, "2 days and 1 second"),
        (86400 + 3600 + 60, "1 day, 1 hour, and 1 minute"),
        (7 * 86400, "1 week"),
        (14 * 86400 + 7200, "2 weeks and 2 hours"),
        (7 * 86400 + 86400 + 3600 + 60 + 1, "1 week, 1 day, 1 hour, 1 minute, and 1 second"),
        (30 * 86400, "4 weeks and 2 days"),
    ],
)
def test_humanized_duration_as_the_original_app_renders_it(seconds: int, expected: str) -> None:
    assert humanize_duration(seconds) == expected


async def test_feed_items_carry_the_original_rendering_from_sql_and_redis(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, sleeper = await timeline_api.register(), await timeline_api.register()
    await timeline_api.follow(reader, sleeper)
    await warm(timeline_api, timeline, reader)
    start = ago(days=1)
    await timeline_api.sleep(sleeper, iso(start), iso(start + timedelta(seconds=25954)))
    await timeline.worker.drain()
    for client in (api, timeline_api):
        item = (await client.feed(reader)).json()["data"][0]
        assert item["humanized_duration"] == "7 hours, 12 minutes, and 34 seconds"


# --- offset paging ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PagingCase:
    params: dict[str, Any]
    items: slice  # which of the five records, longest first
    start_index: int
    last_index: int
    more: bool  # whether next_cursor is set


FIVE_RECORDS = [
    PagingCase({}, slice(0, 5), 0, 4, False),
    PagingCase({"per_page": 2}, slice(0, 2), 0, 1, True),
    PagingCase({"per_page": 2, "start_index": 0}, slice(0, 2), 0, 1, True),
    PagingCase({"per_page": 2, "start_index": 2}, slice(2, 4), 2, 3, True),
    PagingCase({"per_page": 2, "start_index": 3}, slice(3, 5), 3, 4, False),
    PagingCase({"per_page": 2, "start_index": 4}, slice(4, 5), 4, 4, False),
    PagingCase({"per_page": 2, "start_index": 5}, slice(5, 5), 5, 5, False),
    PagingCase({"per_page": 10, "start_index": 9}, slice(9, 9), 9, 9, False),
    PagingCase({"per_page": 5}, slice(0, 5), 0, 4, False),
    PagingCase({"per_page": 4, "start_index": 1}, slice(1, 5), 1, 4, False),
]
_CURSOR = re.compile(rb'"next_cursor":"[^"]*"')


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def without_cursor(body: bytes) -> bytes:
    """A page's bytes with its cursor token masked: the token pins the window's start to the millisecond of
    the request, so two reads a moment apart differ there and nowhere else."""
    return _CURSOR.sub(b'"next_cursor":"..."', body)


async def five_nights(api: Api, reader: Member) -> list[str]:
    """A followee's five nights of different lengths; their ids, longest first."""
    sleeper = await api.register()
    await api.follow(reader, sleeper)
    records = []
    for night in range(5, 0, -1):
        start = ago(days=night)
        records.append(await api.sleep(sleeper, iso(start), iso(start + timedelta(hours=3 + night))))
    return ids(sorted(records, key=lambda record: record["duration"], reverse=True))


def assert_offset_page(page: dict[str, Any], case: PagingCase, expected: list[str]) -> None:
    where = f"params {case.params}"
    assert ids(page["data"]) == expected[case.items], where
    pagination = page["pagination"]
    assert list(pagination) == ["start_index", "per_page", "last_index", "next_cursor"], where
    assert pagination["start_index"] == case.start_index, where
    assert pagination["per_page"] == case.params.get("per_page", 10), where
    assert pagination["last_index"] == case.last_index, where
    assert (pagination["next_cursor"] is not None) == case.more, where


async def test_pages_without_a_cursor_always_carry_the_offsets(api: Api) -> None:
    reader = await api.register()
    expected = await five_nights(api, reader)
    for case in FIVE_RECORDS:
        response = await api.feed(reader, **case.params)
        assert response.status_code == 200, response.text
        assert_offset_page(response.json(), case, expected)


@pytest.mark.parametrize("start_index", [None, 0])
async def test_an_empty_feed_says_last_index_is_start_index(api: Api, start_index: int | None) -> None:
    loner = await api.register()
    params = {} if start_index is None else {"start_index": start_index}
    body = (await api.feed(loner, **params)).json()
    # The original app's spec asserts last_index 0 for an empty feed.
    assert body == {
        "data": [],
        "pagination": {"start_index": 0, "per_page": 10, "last_index": 0, "next_cursor": None},
    }


async def test_pages_read_with_a_cursor_leave_the_offsets_out(api: Api) -> None:
    reader = await api.register()
    expected = await five_nights(api, reader)
    first = (await api.feed(reader, per_page=2)).json()
    second = (await api.feed(reader, per_page=2, cursor=first["pagination"]["next_cursor"])).json()
    assert ids(second["data"]) == expected[2:4]
    assert set(second["pagination"]) == {"per_page", "next_cursor"}


async def test_the_cursor_of_an_offset_page_carries_on_after_it(api: Api) -> None:
    reader = await api.register()
    expected = await five_nights(api, reader)
    for start_index, per_page in ((0, 2), (1, 2), (2, 1), (3, 1)):
        page = (await api.feed(reader, per_page=per_page, start_index=start_index)).json()
        seen = ids(page["data"])
        cursor = page["pagination"]["next_cursor"]
        while cursor is not None:
            page = (await api.feed(reader, per_page=per_page, cursor=cursor)).json()
            seen += ids(page["data"])
            cursor = page["pagination"]["next_cursor"]
        assert seen == expected[start_index:], (start_index, per_page)


async def test_original_clients_page_with_last_index_plus_one(api: Api) -> None:
    """The original app's client loop: start at 0, then last_index + 1, until a page comes back short."""
    reader = await api.register()
    expected = await five_nights(api, reader)
    seen: list[str] = []
    start_index = 0
    while True:
        page = (await api.feed(reader, per_page=2, start_index=start_index)).json()
        seen += ids(page["data"])
        if len(page["data"]) < 2:
            break
        start_index = page["pagination"]["last_index"] + 1
    assert seen == expected


async def test_offset_pages_are_the_same_bytes_from_redis_and_sql(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader = await timeline_api.register()
    expected = await five_nights(timeline_api, reader)
    await timeline.worker.drain()
    await warm(timeline_api, timeline, reader)
    for case in FIVE_RECORDS:
        served = timeline.reader.served
        from_redis = await timeline_api.feed(reader, **case.params)
        from_sql = await api.feed(reader, **case.params)
        assert_offset_page(from_redis.json(), case, expected)
        assert without_cursor(from_redis.content) == without_cursor(from_sql.content), case.params
        # The first page keeps the fast path; only a later offset page is SQL's.
        first_page = case.params.get("start_index", 0) == 0
        assert timeline.reader.served == served + first_page, case.params


async def test_cursor_and_start_index_together_are_refused(api: Api) -> None:
    reader = await api.register()
    await five_nights(api, reader)
    cursor = (await api.feed(reader, per_page=1)).json()["pagination"]["next_cursor"]
    for start_index in (0, 1):
        response = await api.feed(reader, cursor=cursor, start_index=start_index)
        assert_error(response, 422, "validation_error")


# --- success messages -----------------------------------------------------------------------------------


async def test_success_messages_are_the_original_apps(api: Api) -> None:
    alice, bob = await api.register(), await api.register()
    client = api.client
    login = await client.post("/auth/login", json={"username": alice.username, "password": PASSWORD})
    assert login.status_code == 200, login.text
    assert set(login.json()) == {"token", "token_type", "expires_in", "message"}
    assert login.json()["message"] == "Login successful"

    follow = await client.post(f"/socials/follow/{bob.id}", headers=alice.headers)
    assert (follow.status_code, follow.json()) == (201, {"message": "Successfully followed user"})
    unfollow = await client.post(f"/socials/unfollow/{bob.id}", headers=alice.headers)
    assert (unfollow.status_code, unfollow.json()) == (200, {"message": "Successfully unfollowed user"})

    clock_in = await client.post("/sleep_records/clock_in", headers=alice.headers)
    assert clock_in.status_code == 201, clock_in.text
    assert set(clock_in.json()) == {"message", "sleep_record_id", "sleep_record", "sleep_records"}
    assert clock_in.json()["message"] == "Clock in successful"
    clock_out = await client.post("/sleep_records/clock_out", headers=alice.headers)
    assert clock_out.status_code == 200, clock_out.text
    assert set(clock_out.json()) == {"message", "duration", "sleep_record"}
    assert clock_out.json()["message"] == "Clock out successful"


# --- the original docs addresses --------------------------------------------------------------------------


async def test_the_swagger_ui_answers_at_the_original_address(client: httpx.AsyncClient) -> None:
    original = await client.get("http://testserver/api-docs/index.html")
    ours = await client.get("http://testserver/api-docs")
    assert original.status_code == 200, original.text
    assert original.headers["content-type"].startswith("text/html")
    assert original.text == ours.text
    assert "/openapi.json" in original.text
    assert original.headers["content-security-policy"] == ours.headers["content-security-policy"]


async def test_the_openapi_document_as_yaml_at_the_original_address(client: httpx.AsyncClient) -> None:
    response = await client.get("http://testserver/api-docs/v1/swagger.yaml")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/yaml"
    document = yaml.safe_load(response.content)
    assert document == (await client.get("http://testserver/openapi.json")).json()
    assert "/api/v1/sleep_records/followings" in document["paths"]
    again = await client.get("http://testserver/api-docs/v1/swagger.yaml")
    assert again.content == response.content


async def test_unknown_docs_addresses_are_enveloped_404s(client: httpx.AsyncClient) -> None:
    for path in ("/api-docs/v2/swagger.yaml", "/api-docs/v1/swagger.json", "/api-docs/index.htm"):
        assert_error(await client.get(f"http://testserver{path}"), 404, "not_found")
