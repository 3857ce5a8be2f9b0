"""Pages come from Redis alone, so Redis itself must stay exact when writers race.

Each test replays, by hand, what a worker holding an old read of the database would write after a newer
change was applied, and checks that the feed from Redis still equals the SQL feed and came from Redis.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from goodnight.feed.render import TOMBSTONE
from goodnight.timeline import keys, repository
from tests.support.api import Api, Member
from tests.support.apps import AppTimeline
from tests.timeline.test_timeline import ids, night, same_feed, uuid_of, warm


def entry_of(record: dict[str, object]) -> tuple[uuid.UUID, int, datetime]:
    start = datetime.fromisoformat(str(record["clocked_in_at"]).replace("Z", "+00:00"))
    return uuid.UUID(str(record["id"])), int(str(record["duration"])), start


async def test_a_stale_follow_never_undoes_a_newer_unfollow(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, bob = await timeline_api.register(), await timeline_api.register()
    await warm(timeline_api, timeline, reader)
    record = await night(timeline_api, bob, 1, 8)
    await timeline_api.follow(reader, bob)  # version 1
    await timeline_api.unfollow(reader, bob)  # version 2
    # A worker that read the follow (version 1) before the unfollow committed writes only now.
    stale = keys.follow_code(1, True)
    assert not await timeline.store.buckets.set_follow_state(
        uuid_of(reader), uuid_of(bob), stale, [repository.entry(*entry_of(record))]
    )
    assert await same_feed(api, timeline_api, timeline, reader) == []
    await timeline_api.follow(reader, bob)  # version 3 wins over everything before it
    assert await same_feed(api, timeline_api, timeline, reader) == [record["id"]]


async def test_fanout_never_adds_the_records_of_someone_the_reader_unfollowed(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, bob, carol = [await timeline_api.register() for _ in range(3)]
    await timeline_api.follow(reader, bob)
    await timeline_api.follow(reader, carol)
    await warm(timeline_api, timeline, reader)
    kept = await night(timeline_api, carol, 2, 7)
    await timeline.worker.drain()
    await timeline_api.unfollow(reader, bob)
    # Bob clocks out; the worker fanning it out read Bob's followers before the unfollow committed.
    record = await night(timeline_api, bob, 1, 8)
    await timeline.store.buckets.add([uuid_of(reader)], uuid_of(bob), [repository.entry(*entry_of(record))])
    assert await same_feed(api, timeline_api, timeline, reader) == [kept["id"]]
    await timeline.worker.drain()
    assert await same_feed(api, timeline_api, timeline, reader) == [kept["id"]]


async def test_a_deleted_record_stays_hidden_when_a_stale_fanout_puts_it_back(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, bob = await timeline_api.register(), await timeline_api.register()
    await timeline_api.follow(reader, bob)
    await warm(timeline_api, timeline, reader)
    gone, kept = await night(timeline_api, bob, 2, 8), await night(timeline_api, bob, 1, 6)
    await timeline.worker.drain()
    deleted = await timeline_api.client.delete(f"/sleep_records/{gone['id']}", headers=bob.headers)
    assert deleted.status_code == 204
    await timeline.worker.drain()
    # A fanout that read the record before the delete committed: its entry and rendering arrive late.
    record_id, duration, start = entry_of(gone)
    day = keys.bucket_day(start)
    await timeline.store.renderings.put([(record_id, day, b"\0" * 8 + b'{"stale":true}')])
    await timeline.store.buckets.add(
        [uuid_of(reader)], uuid_of(bob), [repository.entry(record_id, duration, start)]
    )
    assert await timeline.redis.get(keys.rendering_key(record_id)) == TOMBSTONE
    assert await same_feed(api, timeline_api, timeline, reader) == [kept["id"]]


async def test_a_missing_rendering_is_answered_from_sql_and_repaired(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, bob = await timeline_api.register(), await timeline_api.register()
    await timeline_api.follow(reader, bob)
    await warm(timeline_api, timeline, reader)
    record = await night(timeline_api, bob, 1, 8)
    await timeline.worker.drain()
    await timeline.redis.delete(keys.rendering_key(uuid.UUID(record["id"])))
    declined = timeline.reader.declined
    assert ids(await api.whole_feed(reader)) == ids(await timeline_api.whole_feed(reader)) == [record["id"]]
    assert timeline.reader.declined > declined, "a page without its rendering is not served from Redis"
    await timeline.reader.drain_background()  # the rebuild stores the rendering again
    assert await same_feed(api, timeline_api, timeline, reader) == [record["id"]]


async def test_celebrity_records_just_past_the_window_never_send_the_feed_to_sql(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    star = await timeline_api.register()
    fans: list[Member] = [await timeline_api.register() for _ in range(5)]  # above the test threshold of 3
    for fan in fans:
        await timeline_api.follow(fan, star)
    # Inside the celebrity snapshot's span (8 days) but outside the 7-day window: its rendering has expired
    # with its day, or was never stored.
    await night(timeline_api, star, 7.5, 8)
    await timeline.worker.drain()
    recent = await night(timeline_api, star, 1, 7)
    await warm(timeline_api, timeline, fans[0])
    await timeline.worker.drain()
    assert await timeline.store.celebrities.contains(uuid_of(star))
    declined = timeline.reader.declined
    assert await same_feed(api, timeline_api, timeline, fans[0]) == [recent["id"]]
    assert timeline.reader.declined == declined
