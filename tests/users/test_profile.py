"""PATCH /users/me: a new name, on every backend, and in followers' feeds at once (SQL and Redis)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import orjson
import pytest

from goodnight.feed.render import TOMBSTONE
from goodnight.feed.repository import Author
from goodnight.feed.window import REACH
from goodnight.jobs.events import NameChanged
from goodnight.jobs.outbox import EventKind
from goodnight.kit.clock import utcnow
from goodnight.middleware import MAX_BODY_BYTES
from goodnight.redis_client import Breaker
from goodnight.timeline import keys, repository
from goodnight.timeline.fanout import Fanout
from goodnight.timeline.renderings import Renderings
from tests.support.api import Api, Member
from tests.support.apps import AppTimeline
from tests.support.envelope import assert_error, assert_validation_error
from tests.support.outbox import outbox_rows, redis_away_inline
from tests.timeline.test_timeline import night, same_feed, uuid_of, warm
from tests.users.test_users import BAD_NAMES, assert_user


async def me(api: Api, who: Member) -> dict[str, Any]:
    response = await api.client.get("/users/me", headers=who.headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def renamed(api: Api, who: Member, name: str | None) -> dict[str, Any]:
    response = await api.rename(who, name)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert_user(body, username=who.username, name=name)
    return body


def names_in(items: list[dict[str, Any]]) -> list[str | None]:
    return [item["user"]["name"] for item in items]


# --- the route ----------------------------------------------------------------------------------------------


async def test_a_new_name_is_answered_and_kept(api: Api) -> None:
    alice = await api.register("alice", name="Alice")
    bob = await api.register("bob")
    await api.follow(bob, alice)
    before = await me(api, alice)
    body = await renamed(api, alice, "Alice Liddell")
    # Everything but the name is as it was: the counters, the id, the creation time.
    assert body == {**before, "name": "Alice Liddell"}
    assert await me(api, alice) == body
    other = await api.client.get(f"/users/{alice.id}", headers=bob.headers)
    assert other.json() == body


async def test_null_clears_the_name_and_the_same_name_again_is_fine(api: Api) -> None:
    alice = await api.register("alice", name="Alice")
    await renamed(api, alice, None)
    assert (await me(api, alice))["name"] is None
    await renamed(api, alice, None)
    await renamed(api, alice, "Alice")
    await renamed(api, alice, "Alice")
    assert (await me(api, alice))["name"] == "Alice"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("n" * 60, id="60-chars"),
        pytest.param("😴" * 60, id="60-emoji"),
        pytest.param("Zoë O'Brien-Ñúñez 张伟", id="unicode"),
        pytest.param("سارة", id="right-to-left"),
        pytest.param("👩\u200d👩\u200d👧", id="zwj-emoji"),
    ],
)
async def test_names_at_the_edges_are_kept_as_sent(api: Api, name: str) -> None:
    alice = await api.register("alice")
    await renamed(api, alice, name)
    assert (await me(api, alice))["name"] == name


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_a_name_nobody_may_have_is_422_and_changes_nothing(api: Api, name: str) -> None:
    alice = await api.register("alice", name="Alice")
    assert_validation_error(await api.rename(alice, name), "name")
    assert (await me(api, alice))["name"] == "Alice"


BAD_BODIES: dict[str, tuple[Any, str]] = {
    "empty-object": ({}, "name"),
    "name-int": ({"name": 42}, "name"),
    "name-bool": ({"name": False}, "name"),
    "name-list": ({"name": ["Alice"]}, "name"),
    "name-object": ({"name": {"first": "Alice"}}, "name"),
    "array": ([{"name": "Alice"}], "body"),
    "string": ("Alice", "body"),
    "lone-surrogate": (b'{"name": "Ali\\ud800ce"}', "name"),
    "not-json": (b'{"name": ', "body"),
    "no-body": (None, "body"),
}


@pytest.mark.parametrize(("body", "field"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_a_malformed_body_is_422_and_changes_nothing(api: Api, body: Any, field: str) -> None:
    alice = await api.register("alice", name="Alice")
    headers = {**alice.headers, "Content-Type": "application/json"}
    content = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    response = await api.client.patch("/users/me", content=content, headers=headers)
    assert_validation_error(response, field)
    assert (await me(api, alice))["name"] == "Alice"


async def test_a_body_past_the_limit_is_413_and_changes_nothing(api: Api) -> None:
    alice = await api.register("alice", name="Alice")
    body = orjson.dumps({"name": "n" * (MAX_BODY_BYTES + 1)})
    headers = {**alice.headers, "Content-Type": "application/json"}
    response = await api.client.patch("/users/me", content=body, headers=headers)
    assert_error(response, 413, "payload_too_large")
    assert (await me(api, alice))["name"] == "Alice"


async def test_a_rename_needs_a_valid_unrevoked_token(api: Api) -> None:
    alice = await api.register("alice", name="Alice")
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
        response = await api.client.patch("/users/me", json={"name": "Mallory"}, headers=headers)
        assert_error(response, 401, "unauthorized")
    phone = await api.register("phone")  # someone else, whose token stays good
    assert (await api.client.post("/auth/logout", headers=alice.headers)).status_code == 204
    assert_error(await api.rename(alice, "Mallory"), 401, "unauthorized")
    found = await api.client.get(f"/users/{alice.id}", headers=phone.headers)
    assert found.json()["name"] == "Alice"


async def test_an_unchanged_name_writes_no_event(timeline_api: Api, timeline: AppTimeline) -> None:
    alice = await timeline_api.register("alice", name="Alice")
    await timeline.worker.drain()
    await renamed(timeline_api, alice, "Alice")
    assert await outbox_rows(timeline.fanout.database) == []
    await renamed(timeline_api, alice, "Al")
    assert [row.kind for row in await outbox_rows(timeline.fanout.database)] == [EventKind.NAME_CHANGED]


# --- the name in feeds --------------------------------------------------------------------------------------


async def test_followers_see_the_new_name_in_the_sql_feed_at_once(api: Api) -> None:
    alice, bob = await api.register("alice", name="Alice"), await api.register("bob")
    await api.follow(bob, alice)
    for days in (3, 2, 1):
        await night(api, alice, days, 5 + days)
    assert names_in(await api.whole_feed(bob, per_page=2)) == ["Alice"] * 3
    await renamed(api, alice, "Alice Liddell")
    assert names_in(await api.whole_feed(bob, per_page=2)) == ["Alice Liddell"] * 3
    await renamed(api, alice, None)
    assert names_in(await api.whole_feed(bob, per_page=2)) == [None] * 3


async def test_with_redis_timelines_the_new_name_is_served_from_redis_before_any_worker_runs(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader = await timeline_api.register()
    author = await timeline_api.register(name="Author")
    star = await timeline_api.register(name="Star")
    await timeline_api.follow(reader, author)
    await timeline_api.follow(reader, star)
    for _ in range(3):  # the star has more followers than the test threshold: merged at read time
        await timeline_api.follow(await timeline_api.register(), star)
    await warm(timeline_api, timeline, reader)
    records = [await night(timeline_api, author, 2, 7), await night(timeline_api, star, 1, 8)]
    await timeline.worker.drain()
    assert await timeline.store.celebrities.contains(uuid_of(star))
    feed = await same_feed(api, timeline_api, timeline, reader, per_page=1)
    assert feed == [records[1]["id"], records[0]["id"]]
    await renamed(timeline_api, author, "Author Renamed")
    await renamed(timeline_api, star, None)
    items = await timeline_api.whole_feed(reader, per_page=1)
    assert names_in(items) == [None, "Author Renamed"]
    assert await same_feed(api, timeline_api, timeline, reader, per_page=1) == feed
    await timeline.worker.drain()
    assert await same_feed(api, timeline_api, timeline, reader, per_page=1) == feed
    assert names_in(await timeline_api.whole_feed(reader)) == [None, "Author Renamed"]


async def rendering_of(timeline: AppTimeline, record: dict[str, Any]) -> bytes | None:
    found: bytes | None = await timeline.redis.get(keys.rendering_key(uuid.UUID(record["id"])))
    return found


async def test_a_rename_never_brings_a_deleted_record_back(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, author = await timeline_api.register(), await timeline_api.register(name="Author")
    await timeline_api.follow(reader, author)
    await warm(timeline_api, timeline, reader)
    gone, kept = await night(timeline_api, author, 2, 8), await night(timeline_api, author, 1, 6)
    await timeline.worker.drain()
    deleted = await timeline_api.client.delete(f"/sleep_records/{gone['id']}", headers=author.headers)
    assert deleted.status_code == 204
    await renamed(timeline_api, author, "Renamed")
    assert await rendering_of(timeline, gone) == TOMBSTONE
    assert await same_feed(api, timeline_api, timeline, reader) == [kept["id"]]
    await timeline.worker.drain()
    assert await rendering_of(timeline, gone) == TOMBSTONE
    assert await same_feed(api, timeline_api, timeline, reader) == [kept["id"]]


async def test_a_rendering_stored_late_from_an_older_read_never_replaces_the_new_name(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, author = await timeline_api.register(), await timeline_api.register(name="Old")
    await timeline_api.follow(reader, author)
    await warm(timeline_api, timeline, reader)
    record = await night(timeline_api, author, 1, 8)  # its fanout has not run yet: no rendering stored
    assert await rendering_of(timeline, record) is None
    await renamed(timeline_api, author, "New")
    # That fanout read the record with the old name, and stores its rendering (SET NX) only now.
    async with timeline.fanout.database.reader() as session:
        rows = await repository.window_records(session, utcnow() - REACH, authors=[uuid_of(author)])
    old = Author(uuid_of(author), author.username, "Old")
    await timeline.store.renderings.put([repository.rendering(replace(row, author=old)) for row in rows])
    assert b'"name":"New"' in (await rendering_of(timeline, record) or b"")
    await timeline.worker.drain()
    assert names_in(await timeline_api.whole_feed(reader)) == ["New"]
    assert await same_feed(api, timeline_api, timeline, reader) == [record["id"]]


async def test_of_two_renames_racing_through_their_handlers_the_newest_name_wins(
    api: Api, timeline_api: Api, timeline: AppTimeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, author = await timeline_api.register(), await timeline_api.register(name="First")
    await timeline_api.follow(reader, author)
    await warm(timeline_api, timeline, reader)
    record = await night(timeline_api, author, 1, 8)
    await timeline.worker.drain()
    rerender = Renderings.rerender
    calls = 0

    async def second_rename_commits_first(store: Renderings, renderings: Any, *, now: float) -> None:
        # This handler read "Second"; before it writes, "Third" commits and its handler writes first.
        nonlocal calls
        calls += 1
        if calls == 1:
            await renamed(timeline_api, author, "Third")
        await rerender(store, renderings, now=now)

    await renamed(timeline_api, author, "Second")
    monkeypatch.setattr(Renderings, "rerender", second_rename_commits_first)
    await timeline.fanout.name_changed(NameChanged(uuid_of(author)))
    assert calls == 3  # the stale pass, the third name's own handler, the stale handler's second pass
    monkeypatch.undo()
    assert names_in(await timeline_api.whole_feed(reader)) == ["Third"]
    assert await same_feed(api, timeline_api, timeline, reader) == [record["id"]]


async def test_a_rename_redis_misses_reaches_the_timelines_through_the_outbox(
    api: Api, timeline_api: Api, timeline: AppTimeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, author = await timeline_api.register(), await timeline_api.register(name="Old")
    await timeline_api.follow(reader, author)
    await warm(timeline_api, timeline, reader)
    record = await night(timeline_api, author, 1, 8)
    await timeline.worker.drain()

    monkeypatch.setattr(Fanout, "apply_now", redis_away_inline)
    await renamed(timeline_api, author, "New")  # the rename itself never depends on Redis
    monkeypatch.undo()
    # Meanwhile the feed came from SQL (the breaker), with the new name; then the outbox applies it.
    assert names_in((await timeline_api.feed(reader)).json()["data"]) == ["New"]
    timeline.reader.gate.breaker = Breaker()
    await timeline.worker.drain()
    assert names_in(await timeline_api.whole_feed(reader)) == ["New"]
    assert await same_feed(api, timeline_api, timeline, reader) == [record["id"]]
