"""The Redis timeline on a real 3-master Redis Cluster started by the suite.

The app gets ``GOODNIGHT_REDIS_CLUSTER=1`` and one node's URL. The main flows must serve exactly the SQL
feed, from Redis; the keys must really spread over the nodes; and every multi-key command must stay in one
slot (a node refuses cross-slot keys with CROSSSLOT, which the tests provoke on purpose to prove it would).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio
from fastapi import FastAPI
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from goodnight.feed.position import parse_position
from goodnight.redis_client import Breaker
from goodnight.timeline import keys
from tests.support.api import Api, Member
from tests.support.apps import (
    CELEBRITY_THRESHOLD,
    AppTimeline,
    client_for,
    running,
    timeline_of,
    timeline_settings,
)
from tests.support.databases import TestDatabase, truncate
from tests.support.redis_cluster import RedisClusterNodes
from tests.timeline.test_timeline import ids, night, same_feed, warm


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    cluster = RedisClusterNodes(masters=3).start()
    yield cluster
    cluster.close()


@pytest_asyncio.fixture(scope="session")
async def cluster_app(database: TestDatabase, redis_cluster: RedisClusterNodes) -> AsyncIterator[FastAPI]:
    settings = timeline_settings(database.url, redis_cluster.url, redis_cluster=True)
    async with running(settings) as application:
        yield application


@pytest.fixture
def cluster_timeline(cluster_app: FastAPI) -> AppTimeline:
    found = timeline_of(cluster_app)
    assert isinstance(found.redis, RedisCluster), "the app did not build a cluster client"
    return found


@pytest_asyncio.fixture
async def cluster_api(api: Api, cluster_app: FastAPI, cluster_timeline: AppTimeline) -> AsyncIterator[Api]:
    # ``api`` first: the SQL app truncates on set-up, and is what every feed is compared with.
    await truncate(cluster_app.state.services.database.engine)
    await cluster_timeline.redis.flushall()  # FLUSHALL goes to every primary
    cluster_timeline.reader.gate.breaker = Breaker()
    async with client_for(cluster_app) as http:
        yield Api(http)
    await cluster_timeline.reader.drain_background()


@pytest_asyncio.fixture
async def nodes(redis_cluster: RedisClusterNodes) -> AsyncIterator[dict[int, Redis]]:
    """A plain (non-cluster) connection to each node: what lives where, and raw multi-key commands that a
    node rejects with CROSSSLOT unless every key hashes to one slot."""
    clients = {port: Redis(host="127.0.0.1", port=port) for port in redis_cluster.ports}
    yield clients
    for client in clients.values():
        await client.aclose()


def uuid_of(member: Member) -> uuid.UUID:
    return uuid.UUID(member.id)


def cluster_client(timeline: AppTimeline) -> RedisCluster:
    assert isinstance(timeline.redis, RedisCluster)
    return timeline.redis


async def slot_owner(timeline: AppTimeline, key: str) -> int:
    """The port of the master that owns ``key``'s slot."""
    redis = cluster_client(timeline)
    await redis.initialize()
    node = redis.get_node_from_key(key)
    assert node is not None
    return int(node.port)


async def raw(node: Redis, *command: str | bytes) -> Any:
    """A command sent as is to one node: multi-key commands fail with CROSSSLOT unless in one slot."""
    return await node.execute_command(*command)  # type: ignore[no-untyped-call]


async def where_keys_live(nodes: dict[int, Redis], pattern: str) -> dict[int, list[bytes]]:
    """Keys matching ``pattern`` found on each node (SCAN on each node sees only that node's keys)."""
    found: dict[int, list[bytes]] = {}
    for port, node in nodes.items():
        matched = [key async for key in node.scan_iter(match=pattern, count=1000)]
        if matched:
            found[port] = matched
    return found


async def test_fanout_spreads_timelines_over_the_nodes_and_serves_them(
    api: Api, cluster_api: Api, cluster_timeline: AppTimeline, nodes: dict[int, Redis]
) -> None:
    author, other = await cluster_api.register(), await cluster_api.register()
    # Enough readers that their timelines land on at least two nodes (slots follow the random user ids).
    readers: list[Member] = []
    owners: dict[str, int] = {}
    while len(readers) < 4 or len(set(owners.values())) < 2:
        assert len(readers) < 40, "every reader hashed to the same node: the cluster is not being used"
        reader = await cluster_api.register()
        readers.append(reader)
        owners[reader.id] = await slot_owner(cluster_timeline, keys.marker_key(uuid_of(reader)))
    for reader in readers:
        await cluster_api.follow(reader, author)
        await cluster_api.follow(reader, other)
    await warm(cluster_api, cluster_timeline, *readers)
    nights = [await night(cluster_api, author, days, 6 + days) for days in (5, 3, 1)]
    nights.append(await night(cluster_api, other, 2, 7.25))
    await cluster_timeline.worker.drain()
    for reader in readers:
        feed = await same_feed(api, cluster_api, cluster_timeline, reader, per_page=2)
        assert set(feed) == set(ids(nights))

    placement: dict[str, set[int]] = {}
    for reader in readers:
        tag = uuid_of(reader)
        found = await where_keys_live(nodes, f"gn:*{{{tag.hex}}}*")
        placement[reader.id] = set(found)
        assert set(found) == {owners[reader.id]}, f"one reader's keys are spread over nodes: {found}"
        reader_keys = found[owners[reader.id]]
        assert keys.marker_key(tag).encode() in reader_keys
        # Three nights on three different days from one author, one more from the other: four buckets.
        buckets = [key for key in reader_keys if key.startswith(b"gn:tl:")]
        assert len(buckets) == len({record["clocked_in_at"][:10] for record in nights})
        # The raw multi-key commands the store relies on, straight to the node: no CROSSSLOT.
        node = nodes[owners[reader.id]]
        assert await raw(node, "EXISTS", *reader_keys) == len(reader_keys)
        assert len(await raw(node, "MGET", keys.rebuild_lock_key(tag), keys.marker_key(tag))) == 2
    assert len(set().union(*placement.values())) >= 2, f"all timelines on one node: {placement}"


async def test_a_multi_key_command_across_users_is_refused_by_the_cluster(
    cluster_api: Api, cluster_timeline: AppTimeline, nodes: dict[int, Redis]
) -> None:
    """The control for the test above: without a shared hash tag the same command fails, so passing it
    means something."""
    first = await cluster_api.register()
    others = [await cluster_api.register() for _ in range(40)]
    first_key = keys.marker_key(uuid_of(first))
    first_slot = cluster_client(cluster_timeline).keyslot(first_key)
    stranger = next(
        m
        for m in others
        if cluster_client(cluster_timeline).keyslot(keys.marker_key(uuid_of(m))) != first_slot
    )
    node = nodes[await slot_owner(cluster_timeline, first_key)]
    with pytest.raises(ResponseError, match=r"CROSSSLOT|hash to the same slot"):
        await raw(node, "EXISTS", first_key, keys.marker_key(uuid_of(stranger)))


async def test_follow_unfollow_and_delete_are_visible_on_the_next_read(
    api: Api, cluster_api: Api, cluster_timeline: AppTimeline
) -> None:
    reader, bob = await cluster_api.register(), await cluster_api.register()
    await warm(cluster_api, cluster_timeline, reader)
    record = await night(cluster_api, bob, 1, 8)
    await cluster_api.follow(reader, bob)  # applied inline: no worker runs
    assert await same_feed(api, cluster_api, cluster_timeline, reader) == [record["id"]]
    await cluster_api.unfollow(reader, bob)
    assert await same_feed(api, cluster_api, cluster_timeline, reader) == []
    await cluster_api.follow(reader, bob)
    assert await same_feed(api, cluster_api, cluster_timeline, reader) == [record["id"]]
    deleted = await cluster_api.client.delete(f"/sleep_records/{record['id']}", headers=bob.headers)
    assert deleted.status_code == 204
    assert await same_feed(api, cluster_api, cluster_timeline, reader) == []
    await cluster_timeline.worker.drain()
    assert await same_feed(api, cluster_api, cluster_timeline, reader) == []
    buckets = await cluster_timeline.redis.zrange(
        keys.bucket_key(uuid_of(reader), keys.bucket_day(_parse(record["clocked_in_at"]))), 0, -1
    )
    assert buckets == [], "the deletion's fanout did not free the entry"


async def test_a_rename_and_an_account_deletion_are_visible_on_the_next_read(
    api: Api, cluster_api: Api, cluster_timeline: AppTimeline
) -> None:
    readers = [await cluster_api.register() for _ in range(3)]
    author = await cluster_api.register(name="Before")
    for reader in readers:
        await cluster_api.follow(reader, author)
    await warm(cluster_api, cluster_timeline, *readers, author)
    records = [await night(cluster_api, author, days, 6 + days) for days in (3, 2, 1)]
    await cluster_timeline.worker.drain()
    renamed = await cluster_api.rename(author, "After")  # renderings on many nodes, re-rendered inline
    assert renamed.status_code == 200, renamed.text
    for reader in readers:
        assert set(await same_feed(api, cluster_api, cluster_timeline, reader)) == set(ids(records))
        assert {item["user"]["name"] for item in await cluster_api.whole_feed(reader)} == {"After"}
    author_keys = f"gn:t*{{{uuid_of(author).hex}}}*"  # all in one slot
    assert [key async for key in cluster_timeline.redis.scan_iter(match=author_keys)] != []  # warm
    deleted = await cluster_api.delete_account(author)  # tombstones land on many nodes
    assert deleted.status_code == 204, deleted.text
    for reader in readers:
        assert await same_feed(api, cluster_api, cluster_timeline, reader) == []
    await cluster_timeline.worker.drain()
    for reader in readers:
        assert await same_feed(api, cluster_api, cluster_timeline, reader) == []
        state = await cluster_timeline.redis.hget(
            keys.follow_state_key(uuid_of(reader)), uuid_of(author).bytes
        )
        assert int(state or 0) == keys.AUTHOR_GONE
    assert [key async for key in cluster_timeline.redis.scan_iter(match=author_keys)] == []


async def test_celebrities_are_merged_at_read_time(
    api: Api, cluster_api: Api, cluster_timeline: AppTimeline, nodes: dict[int, Redis]
) -> None:
    star = await cluster_api.register()
    fans = [await cluster_api.register() for _ in range(5)]  # above the test threshold of 3
    regular = await cluster_api.register()
    for fan in fans:
        await cluster_api.follow(fan, star)
    for fan in fans[:CELEBRITY_THRESHOLD]:  # exactly at the threshold: not a celebrity, fanned out
        await cluster_api.follow(fan, regular)
    await warm(cluster_api, cluster_timeline, *fans)
    await cluster_timeline.worker.drain()
    star_nights = [await night(cluster_api, star, days, 9 - days) for days in (4, 2)]
    regular_night = await night(cluster_api, regular, 1, 7.5)
    await cluster_timeline.worker.drain()
    store = cluster_timeline.store
    assert await store.celebrities.contains(uuid_of(star))
    assert await store.celebrities.members() == {uuid_of(star)}  # EXISTS + SMEMBERS in one pipeline
    for fan in fans:
        found = await where_keys_live(nodes, f"gn:tl:{{{uuid_of(fan).hex}}}:*")
        members: list[bytes] = [
            member
            for port, fan_keys in found.items()
            for key in fan_keys
            for member in await raw(nodes[port], "ZRANGE", key, "0", "-1")
        ]
        fanned = {uuid.UUID(regular_night["id"])} if fan in fans[:CELEBRITY_THRESHOLD] else set()
        assert {parse_position(member)[1] for member in members} == fanned
        feed = await same_feed(api, cluster_api, cluster_timeline, fan, per_page=1)
        assert set(feed) == {*ids(star_nights), *(str(record_id) for record_id in fanned)}

    # Both celebrity keys share a slot: one DEL drops them, and the next reads rebuild the set.
    owner = nodes[await slot_owner(cluster_timeline, keys.CELEBRITIES)]
    assert await raw(owner, "EXISTS", keys.CELEBRITIES, keys.CELEBRITIES_READY) == 2
    await store.celebrities.forget()
    assert await raw(owner, "EXISTS", keys.CELEBRITIES, keys.CELEBRITIES_READY) == 0
    await warm(cluster_api, cluster_timeline, *fans)
    assert await store.celebrities.members() == {uuid_of(star)}
    for fan in fans:
        await same_feed(api, cluster_api, cluster_timeline, fan, per_page=2)


async def test_cold_timelines_are_rebuilt_across_the_cluster(
    api: Api, cluster_api: Api, cluster_timeline: AppTimeline, nodes: dict[int, Redis]
) -> None:
    readers = [await cluster_api.register() for _ in range(4)]
    authors = [await cluster_api.register() for _ in range(3)]
    for reader in readers:
        for author in authors:
            await cluster_api.follow(reader, author)
    records = [
        await night(cluster_api, author, days, 4 + index + days / 2)
        for index, author in enumerate(authors)
        for days in (6, 3.5, 0.8)
    ]
    await cluster_timeline.worker.drain()
    declined = cluster_timeline.reader.declined
    for reader in readers:  # never read: cold, answered from SQL while it is built
        first = await cluster_api.whole_feed(reader, per_page=4)
        assert ids(first) == ids(await api.whole_feed(reader, per_page=4))
    assert cluster_timeline.reader.declined > declined
    await warm(cluster_api, cluster_timeline, *readers)
    for reader in readers:
        assert set(await same_feed(api, cluster_api, cluster_timeline, reader, per_page=4)) == set(
            ids(records)
        )

    # Drop one reader's whole timeline with one raw DEL on its node (every key in one slot), then again
    # through the store, and read: cold again, then rebuilt.
    tag = uuid_of(readers[0])
    owner = await slot_owner(cluster_timeline, keys.marker_key(tag))
    node = nodes[owner]
    own_keys = (await where_keys_live(nodes, f"gn:*{{{tag.hex}}}*"))[owner]
    assert await raw(node, "DEL", *own_keys) == len(own_keys)
    await warm(cluster_api, cluster_timeline, readers[0])
    await same_feed(api, cluster_api, cluster_timeline, readers[0], per_page=3)
    assert await cluster_timeline.reader.rebuilds.rebuild(tag)  # buckets.clear: DEL marker + every day bucket
    await same_feed(api, cluster_api, cluster_timeline, readers[0], per_page=3)

    # Losing everything (FLUSHALL on every primary) heals the same way.
    await cluster_timeline.redis.flushall()
    for reader_member in readers:
        assert ids(await cluster_api.whole_feed(reader_member)) == ids(await api.whole_feed(reader_member))
    await warm(cluster_api, cluster_timeline, *readers)
    for reader_member in readers:
        await same_feed(api, cluster_api, cluster_timeline, reader_member, per_page=5)
    health = await cluster_api.client.get("/health/ready")
    assert health.status_code == 200
    assert (health.json()["status"], health.json()["redis"]) == ("ok", "ok")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
