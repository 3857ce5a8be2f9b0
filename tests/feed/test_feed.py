from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from goodnight.kit.cursor import encode_cursor
from tests.support.api import Api, Member
from tests.support.envelope import assert_error
from tests.support.nights import logged
from tests.support.times import ago, iso


async def _night(api: Api, who: Member, days_ago: float, hours: float, **extra: float) -> dict[str, Any]:
    start = ago(days=days_ago)
    return await api.sleep(who, iso(start), iso(start + timedelta(hours=hours, **extra)))


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


async def test_feed_orders_by_duration_and_shows_followed_users_only(api: Api) -> None:
    me, bob, carol, stranger = [await api.register() for _ in range(4)]
    await api.follow(me, bob)
    await api.follow(me, carol)
    short = await _night(api, bob, 3, 5)
    long = await _night(api, carol, 2, 9)
    middle = await _night(api, bob, 1, 7, minutes=30)
    await _night(api, stranger, 1, 10)
    await _night(api, me, 1, 11)

    response = await api.feed(me)
    assert response.status_code == 200, response.text
    body = response.json()
    assert _ids(body["data"]) == [long["id"], middle["id"], short["id"]]
    assert body["pagination"] == {"start_index": 0, "per_page": 10, "last_index": 2, "next_cursor": None}
    item = body["data"][1]
    assert item == {
        "id": middle["id"],
        "clocked_in_at": middle["clocked_in_at"],
        "clocked_out_at": middle["clocked_out_at"],
        "duration": 7 * 3600 + 1800,
        "humanized_duration": "7 hours and 30 minutes",
        "user": {"id": bob.id, "username": bob.username, "name": None},
    }


async def test_open_records_never_appear(api: Api) -> None:
    me, bob = await api.register(), await api.register()
    await api.follow(me, bob)
    await api.client.post(
        "/sleep_records/clock_in", json={"clocked_in_at": iso(ago(hours=3))}, headers=bob.headers
    )
    assert (await api.feed(me)).json()["data"] == []


async def test_window_edge_is_seven_days_by_clock_in(api: Api) -> None:
    me, bob = await api.register(), await api.register()
    await api.follow(me, bob)
    edge = ago(days=7)
    await api.sleep(bob, iso(edge - timedelta(hours=10, minutes=2)), iso(edge - timedelta(minutes=2)))
    # Clocked in a minute before the edge, woke inside the window: still out, the window is by clock-in.
    await api.sleep(bob, iso(edge - timedelta(minutes=1)), iso(edge + timedelta(seconds=30)))
    inside = await api.sleep(bob, iso(edge + timedelta(minutes=1)), iso(edge + timedelta(hours=8)))
    assert _ids((await api.feed(me)).json()["data"]) == [inside["id"]]


async def test_follow_unfollow_and_delete_are_visible_on_the_next_read(api: Api) -> None:
    me, bob = await api.register(), await api.register()
    record = await _night(api, bob, 1, 8)
    assert (await api.feed(me)).json()["data"] == []
    await api.follow(me, bob)
    assert _ids((await api.feed(me)).json()["data"]) == [record["id"]]
    await api.unfollow(me, bob)
    assert (await api.feed(me)).json()["data"] == []
    await api.follow(me, bob)
    assert _ids((await api.feed(me)).json()["data"]) == [record["id"]]
    await api.client.delete(f"/sleep_records/{record['id']}", headers=bob.headers)
    assert (await api.feed(me)).json()["data"] == []


async def test_ties_paginate_by_id_without_repeats_or_skips(api: Api) -> None:
    me = await api.register()
    sleepers = [await api.register() for _ in range(4)]
    expected: list[dict[str, Any]] = []
    for index, sleeper in enumerate(sleepers):
        await api.follow(me, sleeper)
        for night in range(3):
            expected.append(await _night(api, sleeper, 6 - night - index * 0.1, 8))  # all exactly 8 hours
    items = await api.whole_feed(me, per_page=5)
    assert _ids(items) == sorted(_ids(expected), reverse=True)


async def test_records_added_mid_scroll_are_never_repeated_or_skipped(api: Api) -> None:
    me, bob, carol = await api.register(), await api.register(), await api.register()
    await api.follow(me, bob)
    await api.follow(me, carol)
    for night in range(6, 0, -1):
        await _night(api, bob, night, 5 + night)
    first = (await api.feed(me, per_page=3)).json()
    seen = _ids(first["data"])
    # Inserted while the client scrolls: one sorts before the cursor (not shown), one after (shown once).
    await _night(api, carol, 6.5, 12)
    late = await _night(api, carol, 0.2, 1)
    rest: list[dict[str, Any]] = []
    cursor = first["pagination"]["next_cursor"]
    while cursor:
        page = (await api.feed(me, per_page=3, cursor=cursor)).json()
        rest += page["data"]
        cursor = page["pagination"]["next_cursor"]
    all_ids = seen + _ids(rest)
    assert len(all_ids) == len(set(all_ids)) == 7
    assert all_ids[-1] == late["id"]
    durations = [item["duration"] for item in first["data"] + rest]
    assert durations == sorted(durations, reverse=True)


async def test_start_index_for_legacy_clients(api: Api) -> None:
    me, bob = await api.register(), await api.register()
    await api.follow(me, bob)
    records = [await _night(api, bob, night, 4 + night) for night in range(5, 0, -1)]
    by_duration = _ids(sorted(records, key=lambda record: record["duration"], reverse=True))
    page = (await api.feed(me, per_page=2, start_index=2)).json()
    assert _ids(page["data"]) == by_duration[2:4]
    assert page["pagination"]["start_index"] == 2
    assert page["pagination"]["last_index"] == 3
    assert page["pagination"]["per_page"] == 2
    beyond = (await api.feed(me, per_page=2, start_index=10)).json()
    assert beyond["data"] == []
    assert beyond["pagination"]["start_index"] == beyond["pagination"]["last_index"] == 10


async def test_feed_rejects_bad_paging(api: Api) -> None:
    me = await api.register()
    stale_cursor = encode_cursor(3600, uuid.uuid4(), ago(days=9))
    cases: list[dict[str, Any]] = [
        {"per_page": 0},
        {"per_page": 101},
        {"per_page": "ten"},
        {"cursor": "!!!"},
        {"cursor": "eyJhIjoxfQ"},
        {"cursor": stale_cursor},
        {"cursor": "x" * 600},
        {"start_index": -1},
        {"start_index": 1, "cursor": "abc"},
    ]
    for params in cases:
        assert_error(await api.feed(me, **params), 422, "validation_error")


async def test_feed_checks_the_token_before_the_query(api: Api) -> None:
    """No token, or a bad one, is 401 whatever the query: input is not validated for unknown callers."""
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic dXNlcjpwdw=="}):
        for params in ({}, {"per_page": 0}, {"cursor": "!!!"}):
            response = await api.client.get("/sleep_records/followings", params=params, headers=headers)
            assert_error(response, 401, "unauthorized")


async def test_feed_cursor_from_one_user_cannot_see_through_another_users_follows(api: Api) -> None:
    me, bob, eve = await api.register(), await api.register(), await api.register()
    await api.follow(me, bob)
    for night in (3, 2, 1):
        await _night(api, bob, night, 5 + night)
    cursor = (await api.feed(me, per_page=1)).json()["pagination"]["next_cursor"]
    assert (await api.feed(eve, cursor=cursor)).json()["data"] == []


def test_feed_times_are_utc_with_z() -> None:
    assert iso(datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)) == "2026-01-02T03:04:05.678Z"


async def test_a_night_logged_mid_scroll_shows_once_if_it_sorts_after_the_cursor(api: Api) -> None:
    me, bob = await api.register(), await api.register()
    await api.follow(me, bob)
    for night in (2, 1):
        await _night(api, bob, night, 4 + night)
    first = (await api.feed(me, per_page=1)).json()
    # Forgotten nights, logged while the reader scrolls: one longer than the first page's (not shown), one
    # shorter than everything seen (shown, in its place).
    for days_ago, hours in ((5, 9), (4, 2)):
        start = ago(days=days_ago)
        await logged(api.client, bob, start, start + timedelta(hours=hours))
    rest = (await api.feed(me, per_page=10, cursor=first["pagination"]["next_cursor"])).json()
    durations = [item["duration"] // 3600 for item in first["data"] + rest["data"]]
    assert durations == [6, 5, 2]
