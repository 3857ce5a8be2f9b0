"""DELETE /users/me with Redis timelines: the records leave every feed on the readers' very next page,
before any worker runs, and the timelines are exact once the outbox has been applied."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from goodnight.feed.render import TOMBSTONE
from goodnight.jobs import outbox
from goodnight.jobs.outbox import EventKind
from goodnight.redis_client import Breaker
from goodnight.timeline import keys, repository
from goodnight.timeline.fanout import Fanout
from goodnight.users import deletion
from tests.support.api import Api, Member
from tests.support.apps import AppTimeline
from tests.support.outbox import outbox_rows, redis_away_inline, redis_timelines, sql_timelines
from tests.timeline.test_timeline import night, same_feed, uuid_of, warm
from tests.timeline.test_timeline_races import entry_of
from tests.users.test_account_deletion import assert_deleted


async def assert_timelines_exact(timeline: AppTimeline, readers: list[Member]) -> None:
    """Every reader's Redis timeline holds exactly what SQL says it should."""
    wanted = [uuid_of(reader) for reader in readers]
    found = await redis_timelines(timeline.redis, wanted)
    expected = await sql_timelines(timeline.fanout.database, wanted)
    for reader in wanted:
        assert set(found[reader]) == expected[reader], reader


async def reader_keys(timeline: AppTimeline, who: Member) -> list[bytes]:
    return [key async for key in timeline.redis.scan_iter(match=f"gn:t*{{{uuid_of(who).hex}}}*")]


async def rendering_of(timeline: AppTimeline, record: dict[str, Any]) -> bytes | None:
    found: bytes | None = await timeline.redis.get(keys.rendering_key(uuid.UUID(record["id"])))
    return found


@pytest.mark.parametrize("celebrity", [False, True], ids=["fanned-out", "celebrity"])
async def test_the_records_leave_every_feed_on_the_next_page_and_the_timelines_end_exact(
    api: Api, timeline_api: Api, timeline: AppTimeline, monkeypatch: pytest.MonkeyPatch, celebrity: bool
) -> None:
    monkeypatch.setattr(deletion, "FOLLOWERS_PER_EVENT", 2)  # several events, one batch of followers each
    author, other = await timeline_api.register(), await timeline_api.register()
    readers = [await timeline_api.register() for _ in range(5 if celebrity else 3)]  # the threshold is 3
    for reader in readers:
        await timeline_api.follow(reader, author)
        await timeline_api.follow(reader, other)
    await timeline_api.follow(author, other)  # the author's own timeline, which goes too
    await warm(timeline_api, timeline, author, *readers)
    gone = [await night(timeline_api, author, days, 5 + days) for days in (3, 2, 1)]
    kept = await night(timeline_api, other, 1.5, 6)
    await timeline.worker.drain()
    assert await timeline.store.celebrities.contains(uuid_of(author)) == celebrity
    for reader in readers:
        assert len(await same_feed(api, timeline_api, timeline, reader, per_page=2)) == 4

    assert_deleted(await timeline_api.delete_account(author))
    # No worker has run: the tombstones alone hide the records, from Redis, on every reader's next page.
    events = [row.kind for row in await outbox_rows(timeline.fanout.database)]
    batches = -(-len(readers) // 2)  # of two followers each
    assert events == [EventKind.ACCOUNT_DELETED] + [EventKind.DELETED_ACCOUNT_FOLLOWERS] * batches
    for record in gone:
        assert await rendering_of(timeline, record) == TOMBSTONE
    for reader in readers:
        assert await same_feed(api, timeline_api, timeline, reader, per_page=1) == [kept["id"]]
    assert await reader_keys(timeline, author) == []
    assert not await timeline.store.celebrities.contains(uuid_of(author))

    await timeline.worker.drain()
    assert await outbox_rows(timeline.fanout.database) == []
    await assert_timelines_exact(timeline, readers)
    for reader in readers:
        assert await same_feed(api, timeline_api, timeline, reader, per_page=1) == [kept["id"]]
        state = await timeline.redis.hget(keys.follow_state_key(uuid_of(reader)), uuid_of(author).bytes)
        assert int(state or 0) == keys.AUTHOR_GONE
    assert await reader_keys(timeline, author) == []


async def test_a_stale_fanout_or_follow_after_the_deletion_puts_nothing_back(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, author = await timeline_api.register(), await timeline_api.register()
    await timeline_api.follow(reader, author)
    await warm(timeline_api, timeline, reader)
    record = await night(timeline_api, author, 1, 8)
    await timeline.worker.drain()
    assert_deleted(await timeline_api.delete_account(author))
    await timeline.worker.drain()
    # A worker that read the record and the follow before the deletion committed writes only now.
    entry = repository.entry(*entry_of(record))
    await timeline.store.buckets.add([uuid_of(reader)], uuid_of(author), [entry])
    assert not await timeline.store.buckets.set_follow_state(
        uuid_of(reader), uuid_of(author), keys.follow_code(1, True), [entry]
    )
    await timeline.store.renderings.put([(uuid.UUID(record["id"]), entry[0], b"\0" * 8 + b'{"stale":1}')])
    await assert_timelines_exact(timeline, [reader])
    assert await rendering_of(timeline, record) == TOMBSTONE
    assert await same_feed(api, timeline_api, timeline, reader) == []


async def test_events_still_waiting_for_the_deleted_user_are_applied_harmlessly(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, late_fan, author = [await timeline_api.register() for _ in range(3)]
    await timeline_api.follow(reader, author)
    await warm(timeline_api, timeline, reader, late_fan)
    await timeline.worker.drain()
    await night(timeline_api, author, 1, 8)  # its fanout waits in the outbox
    await timeline_api.follow(late_fan, author)  # applied inline; its event waits too
    await timeline_api.rename(author, "Gone Soon")
    assert_deleted(await timeline_api.delete_account(author))
    for someone in (reader, late_fan):
        assert await same_feed(api, timeline_api, timeline, someone) == []
    await timeline.worker.drain()
    assert await outbox_rows(timeline.fanout.database) == []  # nothing failed, nothing parked
    await assert_timelines_exact(timeline, [reader, late_fan])
    for someone in (reader, late_fan):
        assert await same_feed(api, timeline_api, timeline, someone) == []


async def test_a_deletion_redis_misses_reaches_the_timelines_through_the_outbox(
    api: Api, timeline_api: Api, timeline: AppTimeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, author = await timeline_api.register(), await timeline_api.register()
    await timeline_api.follow(reader, author)
    await warm(timeline_api, timeline, reader)
    record = await night(timeline_api, author, 1, 8)
    await timeline.worker.drain()

    monkeypatch.setattr(Fanout, "apply_now", redis_away_inline)
    assert_deleted(await timeline_api.delete_account(author))  # the deletion never depends on Redis
    monkeypatch.undo()
    # Meanwhile the feed comes from SQL (the breaker); the outbox then writes the tombstones and the rest.
    assert (await timeline_api.feed(reader)).json()["data"] == []
    timeline.reader.gate.breaker = Breaker()
    await timeline.worker.drain()
    assert await rendering_of(timeline, record) == TOMBSTONE
    await assert_timelines_exact(timeline, [reader])
    assert await same_feed(api, timeline_api, timeline, reader) == []


async def test_the_username_is_free_again_and_the_newcomer_inherits_nothing_in_redis(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, author = await timeline_api.register(), await timeline_api.register("author")
    await timeline_api.follow(reader, author)
    await warm(timeline_api, timeline, reader, author)
    await night(timeline_api, author, 1, 8)
    await timeline.worker.drain()
    assert_deleted(await timeline_api.delete_account(author))
    await timeline.worker.drain()
    newcomer = await timeline_api.register("author")
    assert newcomer.id != author.id
    await timeline_api.follow(reader, newcomer)
    record = await night(timeline_api, newcomer, 2, 6)
    await timeline.worker.drain()
    assert await same_feed(api, timeline_api, timeline, reader) == [record["id"]]
    await warm(timeline_api, timeline, newcomer)
    assert await same_feed(api, timeline_api, timeline, newcomer) == []
    await assert_timelines_exact(timeline, [reader, newcomer])


async def test_the_followers_batches_still_waiting_count_as_no_lag(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    author = await timeline_api.register()
    readers = [await timeline_api.register() for _ in range(3)]
    for reader in readers:
        await timeline_api.follow(reader, author)
    await warm(timeline_api, timeline, *readers)
    await night(timeline_api, author, 1, 8)
    await timeline.worker.drain()
    assert_deleted(await timeline_api.delete_account(author))
    database = timeline.fanout.database
    first, *batches = await outbox_rows(database)
    assert first.kind == EventKind.ACCOUNT_DELETED
    assert [batch.kind for batch in batches] == [EventKind.DELETED_ACCOUNT_FOLLOWERS]
    async with database.writer() as session:
        assert await outbox.oldest_pending_age(session) is not None  # the tombstones' event counts
        await timeline.handlers.dispatch(first.kind, first.payload)
        await outbox.complete(session, [first.id])
        await session.commit()
    async with database.reader() as session:
        # Only the followers' batch waits, and pages are exact without it: the timelines are not behind.
        assert await outbox.oldest_pending_age(session) is None
    for reader in readers:
        assert await same_feed(api, timeline_api, timeline, reader) == []
    await timeline.worker.drain()
    await assert_timelines_exact(timeline, readers)
