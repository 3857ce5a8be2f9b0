from __future__ import annotations

from datetime import UTC, timedelta

from tests.support.api import Api
from tests.support.envelope import assert_error
from tests.support.nights import logged
from tests.support.times import ago, iso


async def test_clock_in_and_out_now(api: Api) -> None:
    alice = await api.register()
    opened = await api.client.post("/sleep_records/clock_in", headers=alice.headers)
    assert opened.status_code == 201, opened.text
    body = opened.json()
    record = body["sleep_record"]
    assert body["sleep_record_id"] == record["id"]
    assert record["state"] == "clocked_in"
    assert record["clocked_out_at"] is None
    assert record["duration"] is None
    assert record["user_id"] == alice.id
    assert record["clocked_in_at"].endswith("Z")
    assert [item["id"] for item in body["sleep_records"]] == [record["id"]]

    closed = await api.client.post("/sleep_records/clock_out", headers=alice.headers)
    assert closed.status_code == 200, closed.text
    assert closed.json()["sleep_record"]["state"] == "clocked_out"
    assert closed.json()["duration"] == closed.json()["sleep_record"]["duration"] == 0

    again = await api.client.post("/sleep_records/clock_in", headers=alice.headers)
    assert again.status_code == 201, again.text


async def test_back_dated_record_has_exact_duration(api: Api) -> None:
    alice = await api.register()
    start = ago(hours=9).replace(microsecond=250_000)
    record = await api.sleep(alice, iso(start), iso(start + timedelta(hours=7, minutes=30, seconds=59)))
    assert record["duration"] == 7 * 3600 + 30 * 60 + 59
    assert record["clocked_in_at"] == iso(start)


async def test_clock_in_response_lists_first_page_newest_first(api: Api) -> None:
    alice = await api.register()
    for night in range(25, 0, -1):
        start = ago(days=night)
        await api.sleep(alice, iso(start), iso(start + timedelta(hours=8)))
    opened = await api.client.post("/sleep_records/clock_in", headers=alice.headers)
    listed = opened.json()["sleep_records"]
    assert len(listed) == 20
    assert listed[0]["id"] == opened.json()["sleep_record_id"]
    starts = [item["clocked_in_at"] for item in listed]
    assert starts == sorted(starts, reverse=True)


async def test_clock_in_twice_is_rejected(api: Api) -> None:
    alice = await api.register()
    await api.client.post("/sleep_records/clock_in", headers=alice.headers)
    second = await api.client.post("/sleep_records/clock_in", headers=alice.headers)
    assert_error(second, 400, "already_clocked_in")


async def test_clock_out_without_clock_in_is_rejected(api: Api) -> None:
    alice = await api.register()
    response = await api.client.post("/sleep_records/clock_out", headers=alice.headers)
    assert_error(response, 400, "not_clocked_in")


async def test_clock_in_time_validation(api: Api) -> None:
    alice = await api.register()
    start = ago(days=2)
    await api.sleep(alice, iso(start), iso(start + timedelta(hours=8)))
    cases = {
        "future": iso(ago(seconds=-120)),
        "too old": iso(ago(days=31)),
        "overlaps": iso(start + timedelta(hours=4)),
        "before an existing record": iso(start - timedelta(hours=1)),
        "not a time": "yesterday",
        "out of range": "9999-12-31T23:59:59-14:00",
    }
    for value in cases.values():
        response = await api.client.post(
            "/sleep_records/clock_in", json={"clocked_in_at": value}, headers=alice.headers
        )
        assert_error(response, 422, "validation_error")
    within_skew = await api.client.post(
        "/sleep_records/clock_in", json={"clocked_in_at": iso(ago(seconds=-30))}, headers=alice.headers
    )
    assert within_skew.status_code == 201, within_skew.text


async def test_clock_in_right_after_previous_record_ends(api: Api) -> None:
    alice = await api.register()
    start = ago(days=1)
    first = await api.sleep(alice, iso(start), iso(start + timedelta(hours=3)))
    response = await api.client.post(
        "/sleep_records/clock_in", json={"clocked_in_at": first["clocked_out_at"]}, headers=alice.headers
    )
    assert response.status_code == 201, response.text


async def test_naive_time_is_read_as_utc(api: Api) -> None:
    alice = await api.register()
    start = ago(hours=5).replace(microsecond=0, tzinfo=None)
    response = await api.client.post(
        "/sleep_records/clock_in", json={"clocked_in_at": start.isoformat()}, headers=alice.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["sleep_record"]["clocked_in_at"] == iso(start.replace(tzinfo=UTC))


async def test_clock_out_time_validation(api: Api) -> None:
    alice = await api.register()
    start = ago(hours=6)
    await api.client.post(
        "/sleep_records/clock_in", json={"clocked_in_at": iso(start)}, headers=alice.headers
    )
    for value in (iso(start), iso(start - timedelta(minutes=1)), iso(ago(seconds=-120)), 42):
        response = await api.client.post(
            "/sleep_records/clock_out", json={"clocked_out_at": value}, headers=alice.headers
        )
        assert_error(response, 422, "validation_error")
    still_open = await api.client.get("/sleep_records", headers=alice.headers)
    assert still_open.json()["data"][0]["state"] == "clocked_in"


async def test_history_paginates_without_repeats(api: Api) -> None:
    alice = await api.register()
    for night in range(7, 0, -1):
        start = ago(days=night)
        await api.sleep(alice, iso(start), iso(start + timedelta(hours=7)))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = await api.client.get("/sleep_records", params=params, headers=alice.headers)
        assert page.status_code == 200, page.text
        seen += [item["clocked_in_at"] for item in page.json()["data"]]
        cursor = page.json()["pagination"]["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 == len(set(seen))
    assert seen == sorted(seen, reverse=True)


async def test_history_rejects_bad_paging(api: Api) -> None:
    alice = await api.register()
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "not-a-cursor"}):
        response = await api.client.get("/sleep_records", params=params, headers=alice.headers)
        assert_error(response, 422, "validation_error")


async def test_get_record_visibility(api: Api) -> None:
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    start = ago(hours=10)
    record = await api.sleep(bob, iso(start), iso(start + timedelta(hours=8)))
    path = f"/sleep_records/{record['id']}"
    assert (await api.client.get(path, headers=bob.headers)).json() == record
    assert_error(await api.client.get(path, headers=alice.headers), 404, "not_found")
    await api.follow(alice, bob)
    assert (await api.client.get(path, headers=alice.headers)).status_code == 200
    await api.unfollow(alice, bob)
    assert_error(await api.client.get(path, headers=alice.headers), 404, "not_found")
    assert_error(await api.client.get(path, headers=carol.headers), 404, "not_found")
    for missing in ("nope", "01a2230b-0000-7000-8000-000000000000"):
        assert_error(await api.client.get(f"/sleep_records/{missing}", headers=bob.headers), 404, "not_found")


async def test_delete_own_records_only(api: Api) -> None:
    alice, bob = await api.register(), await api.register()
    start = ago(hours=10)
    record = await api.sleep(bob, iso(start), iso(start + timedelta(hours=8)))
    path = f"/sleep_records/{record['id']}"
    await api.follow(alice, bob)
    assert_error(await api.client.delete(path, headers=alice.headers), 404, "not_found")
    deleted = await api.client.delete(path, headers=bob.headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(await api.client.get(path, headers=bob.headers), 404, "not_found")
    assert_error(await api.client.delete(path, headers=bob.headers), 404, "not_found")
    assert_error(await api.client.delete("/sleep_records/garbage", headers=bob.headers), 404, "not_found")


async def test_deleting_the_open_record_allows_a_new_clock_in(api: Api) -> None:
    alice = await api.register()
    opened = await api.client.post("/sleep_records/clock_in", headers=alice.headers)
    deleted = await api.client.delete(
        f"/sleep_records/{opened.json()['sleep_record_id']}", headers=alice.headers
    )
    assert deleted.status_code == 204
    assert_error(
        await api.client.post("/sleep_records/clock_out", headers=alice.headers), 400, "not_clocked_in"
    )
    assert (await api.client.post("/sleep_records/clock_in", headers=alice.headers)).status_code == 201


async def test_clock_in_still_follows_the_latest_record_after_an_earlier_night_is_logged(api: Api) -> None:
    alice = await api.register()
    wednesday = ago(days=1)
    await api.sleep(alice, iso(wednesday), iso(wednesday + timedelta(hours=8)))
    tuesday = wednesday - timedelta(days=1)
    await logged(api.client, alice, tuesday, tuesday + timedelta(hours=7))
    # Between the two nights, but before the latest one ends: clocking in there is still refused.
    between = await api.client.post(
        "/sleep_records/clock_in",
        json={"clocked_in_at": iso(tuesday + timedelta(hours=12))},
        headers=alice.headers,
    )
    error = assert_error(between, 422, "validation_error")
    assert f"which ends at {iso(wednesday + timedelta(hours=8))};" in error["message"]
    after = await api.client.post(
        "/sleep_records/clock_in",
        json={"clocked_in_at": iso(wednesday + timedelta(hours=8))},
        headers=alice.headers,
    )
    assert after.status_code == 201, after.text
