"""The Redis timeline serves exactly what the SQL feed serves, and serves it from Redis."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from goodnight.models import User
from goodnight.timeline import keys
from tests.support.api import Api, Member
from tests.support.apps import AppTimeline
from tests.support.times import ago, iso


async def night(api: Api, who: Member, days_ago: float, hours: float) -> dict[str, Any]:
    start = ago(days=days_ago)
    return await api.sleep(who, iso(start), iso(start + timedelta(hours=hours)))


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


async def warm(timeline_api: Api, timeline: AppTimeline, *readers: Member) -> None:
    """First reads are answered from SQL while the timeline is built; wait for the builds."""
    for reader in readers:
        await timeline_api.feed(reader)
    await timeline.reader.drain_background()
    for reader in readers:
        await timeline_api.feed(reader)  # the celebrity set is built on the first warm read
    await timeline.reader.drain_background()


async def same_feed(
    sql: Api, cached: Api, timeline: AppTimeline, reader: Member, per_page: int = 3
) -> list[str]:
    served = timeline.reader.served
    expected = await sql.whole_feed(reader, per_page=per_page)
    actual = await cached.whole_feed(reader, per_page=per_page)
    assert actual == expected
    assert timeline.reader.served > served, "the timeline declined: the page came from SQL"
    return ids(actual)


async def test_clock_out_fans_out_to_followers(api: Api, timeline_api: Api, timeline: AppTimeline) -> None:
    reader, bob, carol = [await timeline_api.register() for _ in range(3)]
    await timeline_api.follow(reader, bob)
    await timeline_api.follow(reader, carol)
    await warm(timeline_api, timeline, reader)
    first = await night(timeline_api, bob, 2, 8)
    second = await night(timeline_api, carol, 1, 6)
    await timeline.worker.drain()
    assert await same_feed(api, timeline_api, timeline, reader) == [first["id"], second["id"]]


async def test_cold_timeline_is_answered_from_sql_then_rebuilt(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, bob = await timeline_api.register(), await timeline_api.register()
    await timeline_api.follow(reader, bob)
    records = [await night(timeline_api, bob, days, 5 + days) for days in (5, 3, 1)]
    await timeline.worker.drain()
    declined = timeline.reader.declined
    first = await timeline_api.feed(reader)
    assert timeline.reader.declined == declined + 1
    assert ids(first.json()["data"]) == ids(sorted(records, key=lambda r: r["duration"], reverse=True))
    await warm(timeline_api, timeline, reader)
    await same_feed(api, timeline_api, timeline, reader, per_page=2)


async def test_follow_unfollow_and_delete_are_visible_on_the_next_read(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, bob = await timeline_api.register(), await timeline_api.register()
    await warm(timeline_api, timeline, reader)
    record = await night(timeline_api, bob, 1, 8)
    await timeline_api.follow(reader, bob)  # no worker runs: the follow is applied inline
    assert await same_feed(api, timeline_api, timeline, reader) == [record["id"]]
    await timeline_api.unfollow(reader, bob)
    assert await same_feed(api, timeline_api, timeline, reader) == []
    await timeline_api.follow(reader, bob)
    assert await same_feed(api, timeline_api, timeline, reader) == [record["id"]]
    deleted = await timeline_api.client.delete(f"/sleep_records/{record['id']}", headers=bob.headers)
    assert deleted.status_code == 204
    assert await same_feed(api, timeline_api, timeline, reader) == []
    await timeline.worker.drain()
    assert await same_feed(api, timeline_api, timeline, reader) == []


async def test_celebrities_are_merged_at_read_time(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    star = await timeline_api.register()
    fans = [await timeline_api.register() for _ in range(5)]  # above the test threshold of 3
    regular = await timeline_api.register()
    for fan in fans:
        await timeline_api.follow(fan, star)
        await timeline_api.follow(fan, regular)
    await warm(timeline_api, timeline, *fans)
    await timeline.worker.drain()  # the follow events: from here on, only the clock-outs touch timelines
    star_nights = [await night(timeline_api, star, days, 9 - days) for days in (4, 2)]
    regular_night = await night(timeline_api, regular, 1, 7.5)
    await timeline.worker.drain()
    assert await timeline.store.celebrities.contains(uuid_of(star))
    for fan in fans:
        # The star's records were never fanned out, yet every fan sees them in order.
        for day in {r["clocked_in_at"][:10] for r in star_nights}:
            members = await timeline.redis.zrange(
                f"gn:tl:{{{uuid_of(fan).hex}}}:{day.replace('-', '')}", 0, -1
            )
            assert all(member[4:] != uuid_of_record(r) for r in star_nights for member in members)
        feed = await same_feed(api, timeline_api, timeline, fan, per_page=1)
        assert set(feed) == {*ids(star_nights), regular_night["id"]}


async def test_window_edge_and_pagination_stability(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    reader, bob, carol = [await timeline_api.register() for _ in range(3)]
    await timeline_api.follow(reader, bob)
    await timeline_api.follow(reader, carol)
    await warm(timeline_api, timeline, reader)
    edge = ago(days=7)
    await timeline_api.sleep(bob, iso(edge - timedelta(hours=8, minutes=1)), iso(edge - timedelta(minutes=1)))
    inside = await timeline_api.sleep(bob, iso(edge + timedelta(minutes=1)), iso(edge + timedelta(hours=8)))
    for days in (5, 4, 3, 2):
        await night(timeline_api, bob, days, days + 2)
    await timeline.worker.drain()
    feed = await same_feed(api, timeline_api, timeline, reader, per_page=2)
    assert inside["id"] in feed
    assert len(feed) == 5
    # Scroll one page, let records arrive, scroll on: no repeats, no skips.
    page = (await timeline_api.feed(reader, per_page=2)).json()
    await night(timeline_api, carol, 6, 20)  # sorts before the cursor: not shown in this scroll
    late = await night(timeline_api, carol, 0.5, 1)  # sorts after it: shown once
    await timeline.worker.drain()
    seen = ids(page["data"])
    cursor = page["pagination"]["next_cursor"]
    while cursor:
        page = (await timeline_api.feed(reader, per_page=2, cursor=cursor)).json()
        seen += ids(page["data"])
        cursor = page["pagination"]["next_cursor"]
    assert len(seen) == len(set(seen)) == 6
    assert seen[-1] == late["id"]


def uuid_of(member: Member) -> uuid.UUID:
    return uuid.UUID(member.id)


def uuid_of_record(record: dict[str, Any]) -> bytes:
    return uuid.UUID(record["id"]).bytes


async def test_only_active_followers_get_fanout_and_a_returning_one_is_rebuilt(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    author, active, dormant = [await timeline_api.register() for _ in range(3)]
    await timeline_api.follow(active, author)
    await timeline_api.follow(dormant, author)
    await warm(timeline_api, timeline, active)
    await timeline.worker.drain()
    # The dormant reader was last seen long ago: its marker has expired and fanout must skip it.
    database = timeline.fanout.database
    async with database.writer() as session:
        await session.execute(
            sa.update(User).where(User.id == uuid_of(dormant)).values(last_active_at=ago(days=30))
        )
        await session.commit()
    await timeline.redis.delete(keys.marker_key(uuid_of(dormant)))
    dormant_buckets = f"gn:tl:{{{uuid_of(dormant).hex}}}:*"
    stale = [key async for key in timeline.redis.scan_iter(match=dormant_buckets)]
    if stale:
        await timeline.redis.delete(*stale)
    record = await night(timeline_api, author, 1, 8)
    await timeline.worker.drain()
    assert [key async for key in timeline.redis.scan_iter(match=dormant_buckets)] == []
    assert await same_feed(api, timeline_api, timeline, active) == [record["id"]]
    # Coming back: the first read is answered from SQL (correct), the timeline is rebuilt behind it.
    declined = timeline.reader.declined
    assert ids((await timeline_api.feed(dormant)).json()["data"]) == [record["id"]]
    assert timeline.reader.declined == declined + 1
    await timeline.reader.drain_background()
    assert await same_feed(api, timeline_api, timeline, dormant) == [record["id"]]


async def test_following_a_celebrity_shows_their_records_on_the_next_read(
    api: Api, timeline_api: Api, timeline: AppTimeline
) -> None:
    star, reader, regular = [await timeline_api.register() for _ in range(3)]
    for _ in range(4):  # above the test threshold of 3
        await timeline_api.follow(await timeline_api.register(), star)
    await timeline_api.follow(reader, regular)
    star_night = await night(timeline_api, star, 2, 9)
    regular_night = await night(timeline_api, regular, 1, 7)
    await timeline.worker.drain()
    assert await timeline.store.celebrities.contains(uuid_of(star))
    await warm(timeline_api, timeline, reader)
    # The reader's "which celebrities do I follow" is now known (none) and cached.
    assert await same_feed(api, timeline_api, timeline, reader) == [regular_night["id"]]
    await timeline_api.follow(reader, star)
    assert await same_feed(api, timeline_api, timeline, reader) == [star_night["id"], regular_night["id"]]
    await timeline_api.unfollow(reader, star)
    assert await same_feed(api, timeline_api, timeline, reader) == [regular_night["id"]]
    await timeline_api.follow(reader, star)
    later = await night(timeline_api, star, 0.5, 10)  # never fanned out: merged at read time
    await timeline.worker.drain()
    assert await same_feed(api, timeline_api, timeline, reader) == [
        later["id"],
        star_night["id"],
        regular_night["id"],
    ]
