"""The Redis timeline degrades, never fails: Redis down, flushed or restarted mid-traffic.

Every test runs its own app on its own private ``redis-server`` (the session-wide one is shared by other
tests and must not be stopped). Throughout, every feed equals the SQL feed of the same database; afterwards
the timelines heal without restarting the app and pages are served from Redis again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from goodnight.db import Database
from goodnight.jobs import outbox
from goodnight.timeline import keys
from tests.support.api import Api, Member
from tests.support.apps import AppTimeline, client_for, running, timeline_of, timeline_settings
from tests.support.databases import TestDatabase, truncate
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.times import ago, iso
from tests.timeline.test_timeline import ids, night

HEAL_TIMEOUT_S = 30.0


@dataclass
class Rig:
    """One app with a Redis timeline on a private redis-server that the test may stop, flush or restart."""

    server: RedisServer
    timeline: AppTimeline
    database: Database
    client: httpx.AsyncClient
    api: Api


@contextlib.asynccontextmanager
async def running_rig(
    database: TestDatabase, server: RedisServer, redis_url: str, **overrides: object
) -> AsyncIterator[Rig]:
    async with running(timeline_settings(database.url, redis_url, **overrides)) as app:
        timeline = timeline_of(app)
        db: Database = app.state.services.database
        await truncate(db.engine)
        async with client_for(app) as http:
            yield Rig(server, timeline, db, http, Api(http))
        await timeline.reader.drain_background()


@pytest_asyncio.fixture
async def rig(database: TestDatabase, api: Api) -> AsyncIterator[Rig]:
    # ``api`` (the SQL-only app on the same database) is set up first: it truncates the tables.
    server = RedisServer().start()
    try:
        async with running_rig(database, server, server.url) as built:
            yield built
    finally:
        server.close()


@contextlib.asynccontextmanager
async def behind_a_proxy(database: TestDatabase, **overrides: object) -> AsyncIterator[tuple[Rig, TcpProxy]]:
    """The app reaches its private redis-server through a proxy the test can cut (Redis keeps its data)."""
    server = RedisServer().start()
    proxy = await TcpProxy(server.port).start()
    try:
        async with running_rig(database, server, proxy.url, **overrides) as built:
            yield built, proxy
    finally:
        await proxy.close()
        server.close()


@dataclass
class Cast:
    """Two readers, two regular authors, a celebrity (4 followers > threshold 3) and two of its fans."""

    reader: Member
    other_reader: Member
    alice: Member
    bob: Member
    star: Member
    fans: list[Member]
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def readers(self) -> list[Member]:
        return [self.reader, self.other_reader, *self.fans]


async def cast_and_warm(rig: Rig, sql: Api) -> Cast:
    api = rig.api
    reader, other_reader, alice, bob, star, *fans = [await api.register() for _ in range(7)]
    cast = Cast(reader, other_reader, alice, bob, star, fans)
    for who, whom in [
        (reader, alice),
        (reader, bob),
        (reader, star),
        (other_reader, alice),
        (other_reader, star),
        *((fan, star) for fan in fans),
    ]:
        await api.follow(who, whom)
    cast.records["alice"] = [await night(api, alice, days, 6 + days / 2) for days in (5, 2)]
    cast.records["bob"] = [await night(api, bob, days, 7 + days / 3) for days in (4, 1)]
    cast.records["star"] = [await night(api, star, days, 8 - days / 4) for days in (3, 1.5)]
    await drain_outbox(rig)
    for _ in range(2):  # the first read builds the timelines, the second the celebrity set
        for who in cast.readers:
            await api.feed(who)
        await rig.timeline.reader.drain_background()
    assert await rig.timeline.store.celebrities.contains(uuid_of(star))
    await feeds_match(sql, rig, cast.readers, from_redis=True)
    return cast


# --- Helpers ---------------------------------------------------------------------------------------------


def uuid_of(member: Member) -> uuid.UUID:
    return uuid.UUID(member.id)


async def drain_outbox(rig: Rig) -> int:
    return await rig.timeline.worker.drain()


async def backlog(rig: Rig) -> outbox.OutboxStatus:
    async with rig.database.reader() as session:
        return await outbox.status(session)


async def feeds_match(
    sql: Api, rig: Rig, readers: list[Member], *, per_page: int = 2, from_redis: bool = False
) -> tuple[int, int]:
    """Every reader's whole feed equals the SQL feed. Returns (pages served, pages declined) by Redis.

    ``from_redis`` also demands that every page came from Redis.
    """
    served, declined = rig.timeline.reader.served, rig.timeline.reader.declined
    for reader in readers:
        expected = await sql.whole_feed(reader, per_page=per_page)
        actual = await rig.api.whole_feed(reader, per_page=per_page)
        assert ids(actual) == ids(expected), f"feed of {reader.username} differs from SQL"
        assert actual == expected
    counts = rig.timeline.reader.served - served, rig.timeline.reader.declined - declined
    if from_redis:
        assert counts[1] == 0, f"pages (served, declined) = {counts}: some came from SQL"
        assert counts[0] > 0, f"pages (served, declined) = {counts}: nothing came from Redis"
    return counts


async def heal(sql: Api, rig: Rig, readers: list[Member], *, within: float = HEAL_TIMEOUT_S) -> float:
    """Read, let rebuilds finish, replay the outbox, and repeat until a full pass over every reader is
    served from Redis with nothing left in the outbox. Every read on the way must equal SQL.
    Returns how long healing took."""
    started = time.monotonic()
    while True:
        await rig.timeline.reader.drain_background()
        await drain_outbox(rig)  # events that failed while Redis was away come back after their backoff
        served, declined = await feeds_match(sql, rig, readers)
        status = await backlog(rig)
        assert status.dead == 0, f"events were parked as dead: {status}"
        if declined == 0 and served > 0 and status.pending == 0 and status.in_flight == 0:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            pytest.fail(
                f"timelines never healed in {within} s: last pass served={served} declined={declined}, "
                f"outbox={status}"
            )
        await asyncio.sleep(0.1)


async def ready(rig: Rig) -> dict[str, Any]:
    response = await rig.client.get("/health/ready")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def delete_record(rig: Rig, who: Member, record: dict[str, Any]) -> None:
    response = await rig.client.delete(f"/sleep_records/{record['id']}", headers=who.headers)
    assert response.status_code == 204, response.text


# --- Redis down --------------------------------------------------------------------------------------------


async def test_redis_down_degrades_to_sql_and_heals_after_restart(api: Api, rig: Rig) -> None:
    cast = await cast_and_warm(rig, api)
    assert (await ready(rig))["redis"] == "ok"

    rig.server.stop()
    served = rig.timeline.reader.served
    await feeds_match(api, rig, cast.readers)
    health = await ready(rig)
    assert (health["status"], health["database"], health["redis"]) == ("degraded", "ok", "down")

    # Writes of every kind while Redis is down, each visible in the very next read (from SQL).
    newcomer = await rig.api.register()
    await rig.api.follow(cast.reader, newcomer)
    await rig.api.follow(cast.fans[0], cast.bob)
    fresh = await night(rig.api, newcomer, 1, 9)
    late_alice = await night(rig.api, cast.alice, 0.5, 3)
    star_night = await night(rig.api, cast.star, 0.7, 10)
    await rig.api.unfollow(cast.other_reader, cast.alice)
    await delete_record(rig, cast.bob, cast.records["bob"][0])
    # An open record (clocked in, not out) is never in a feed, and deleting it is fine too.
    opened = await rig.client.post(
        "/sleep_records/clock_in", json={"clocked_in_at": iso(ago(hours=2))}, headers=cast.alice.headers
    )
    assert opened.status_code == 201, opened.text
    await delete_record(rig, cast.alice, {"id": opened.json()["sleep_record_id"]})

    reader_feed = ids(await rig.api.whole_feed(cast.reader))
    assert {fresh["id"], late_alice["id"], star_night["id"]} <= set(reader_feed)
    assert cast.records["bob"][0]["id"] not in reader_feed
    assert not set(ids(cast.records["alice"])) & set(ids(await rig.api.whole_feed(cast.other_reader)))
    await feeds_match(api, rig, [*cast.readers, newcomer])

    # The worker keeps going: every event fails and is put back with a backoff, none is lost or dead.
    assert await drain_outbox(rig) > 0
    status = await backlog(rig)
    assert status.pending > 0, status
    assert status.dead == 0, status
    assert rig.timeline.reader.served == served, "a page was served from a Redis that is down"
    health = await ready(rig)
    assert (health["status"], health["redis"]) == ("degraded", "down")
    assert health["outbox"]["pending"] == status.pending

    rig.server.start()  # same port, empty: everything Redis held is gone
    health = await ready(rig)
    assert (health["status"], health["database"], health["redis"]) == ("ok", "ok", "ok")
    await heal(api, rig, [*cast.readers, newcomer])

    # Fanout is live again, not just the rebuilt timelines.
    after = await night(rig.api, cast.bob, 0.2, 2.5)
    await drain_outbox(rig)
    await feeds_match(api, rig, [*cast.readers, newcomer], from_redis=True)
    assert after["id"] in ids(await rig.api.whole_feed(cast.reader))


# --- Redis unreachable while it keeps its data (a network partition, not a restart) ----------------------


async def test_partition_keeping_redis_data_never_serves_a_timeline_missing_writes(
    api: Api, database: TestDatabase
) -> None:
    """While Redis is unreachable, the follow's inline apply and the clock-out's fanout fail (the outbox keeps
    them for later). When Redis is reachable again its keys are all still there, timelines marked warm: a
    feed served from them before the outbox has replayed would miss the actor's own follow (read-your-writes)
    and the followee's clock-out. After a long outage the outbox's next retry can be minutes away."""
    async with behind_a_proxy(database) as (rig, proxy):
        cast = await cast_and_warm(rig, api)
        await proxy.cut()
        await rig.api.follow(cast.other_reader, cast.bob)  # the inline apply fails
        late = await night(rig.api, cast.alice, 0.5, 3)
        assert await drain_outbox(rig) > 0  # every event fails and backs off
        await feeds_match(api, rig, cast.readers)  # from SQL: right
        assert set(ids(cast.records["bob"])) <= set(ids(await rig.api.whole_feed(cast.other_reader)))
        health = await ready(rig)
        assert (health["status"], health["redis"]) == ("degraded", "down")

        await proxy.restore()
        health = await ready(rig)
        assert (health["status"], health["redis"]) == ("ok", "ok")
        await asyncio.sleep(1.1)  # past the reader's breaker cool-down: Redis is asked again
        # The worker has not retried yet: the feeds must still be right.
        assert late["id"] in ids(await api.whole_feed(cast.reader))
        other_feed = ids(await rig.api.whole_feed(cast.other_reader))
        assert set(ids(cast.records["bob"])) <= set(other_feed), "the reader's own follow is not in its feed"
        assert late["id"] in ids(await rig.api.whole_feed(cast.reader)), "the clock-out is missing"
        await feeds_match(api, rig, cast.readers)
        await heal(api, rig, cast.readers)


async def test_a_long_partition_parks_nothing_as_dead_and_the_backlog_reaches_surviving_timelines(
    api: Api, database: TestDatabase
) -> None:
    """``outbox_max_attempts=2`` stands for a long outage: if unreachable Redis counted as failed attempts,
    every event would be parked as dead within minutes and, Redis coming back with its data and its
    timelines marked warm, nothing would ever replay them. Outages hand events back without spending an
    attempt, so they wait in the outbox however long it takes."""
    async with behind_a_proxy(database, outbox_max_attempts=2) as (rig, proxy):
        cast = await cast_and_warm(rig, api)
        await proxy.cut()
        late = await night(rig.api, cast.alice, 0.5, 3)
        tried_until = time.monotonic() + 4  # several retry rounds: far more than two attempts' worth
        while time.monotonic() < tried_until:
            await drain_outbox(rig)
            await asyncio.sleep(0.2)
        during = await backlog(rig)
        assert during.dead == 0, during
        assert during.pending + during.in_flight >= 1, during
        await proxy.restore()

        # Give the app every chance: rebuilds, outbox passes, breaker cool-downs.
        settle_until = time.monotonic() + 2
        while time.monotonic() < settle_until:
            await rig.timeline.reader.drain_background()
            await drain_outbox(rig)
            for reader in cast.readers:
                await rig.api.whole_feed(reader)
            await asyncio.sleep(0.2)
        await rig.timeline.reader.drain_background()
        status = await backlog(rig)
        feed = ids(await rig.api.whole_feed(cast.reader))
        assert late["id"] in feed, f"the clock-out never reached a timeline that survived; outbox={status}"
        await feeds_match(api, rig, cast.readers, from_redis=True)


# --- Redis flushed ----------------------------------------------------------------------------------------


async def test_redis_flushall_mid_traffic_keeps_feeds_correct_and_heals(api: Api, rig: Rig) -> None:
    cast = await cast_and_warm(rig, api)

    async def flush() -> None:
        assert await rig.timeline.redis.flushall()

    # A clock-out whose fanout runs after the flush lands in timelines that are now cold: never served.
    record = await night(rig.api, cast.alice, 0.5, 4)
    await flush()
    await drain_outbox(rig)
    await feeds_match(api, rig, cast.readers)
    assert record["id"] in ids(await rig.api.whole_feed(cast.reader))
    health = await ready(rig)
    assert (health["status"], health["redis"]) == ("ok", "ok")

    # Rebuilds are in flight (spawned by the reads above) when the next flush hits.
    await flush()
    await rig.api.follow(cast.other_reader, cast.bob)  # read-your-writes across a flush
    await feeds_match(api, rig, cast.readers)
    await rig.timeline.reader.drain_background()
    await rig.api.unfollow(cast.reader, cast.alice)
    await delete_record(rig, cast.bob, cast.records["bob"][1])
    star_night = await night(rig.api, cast.star, 0.45, 9.5)  # the celebrity set is gone too
    await flush()
    await feeds_match(api, rig, cast.readers)
    await drain_outbox(rig)
    await feeds_match(api, rig, cast.readers)
    assert star_night["id"] in ids(await rig.api.whole_feed(cast.fans[1]))

    await heal(api, rig, cast.readers)
    after = await night(rig.api, cast.bob, 0.2, 1.5)
    await drain_outbox(rig)
    await feeds_match(api, rig, cast.readers, from_redis=True)
    assert after["id"] in ids(await rig.api.whole_feed(cast.other_reader))


@contextlib.asynccontextmanager
async def flush_before_marker_write(
    rig: Rig, proxy: TcpProxy, reader: uuid.UUID
) -> AsyncIterator[list[bool]]:
    """Arm a one-shot FLUSHALL, sent straight to the server, just before the first command that writes the
    reader's warm marker reaches Redis (reads and deletions of the marker do not trigger it). Wherever the
    code writes the marker, and whatever else it sends along, Redis loses everything at that moment."""
    marker = keys.marker_key(reader).encode()
    not_a_write = (b"\r\nHGET\r\n", b"\r\nDEL\r\n", b"\r\nUNLINK\r\n", b"\r\nEXISTS\r\n")
    flushed: list[bool] = []
    direct = Redis.from_url(rig.server.url)

    async def before_send(chunk: bytes) -> None:
        if flushed or marker not in chunk or any(command in chunk.upper() for command in not_a_write):
            return
        flushed.append(bool(await direct.flushall()))

    proxy.before_send = before_send
    try:
        yield flushed
    finally:
        proxy.before_send = None
        await direct.aclose()


async def assert_feed_survives_the_flush(
    sql: Api, rig: Rig, reader: Member, records: list[dict[str, Any]]
) -> None:
    redis, tag = rig.timeline.redis, uuid_of(reader)
    warm_marker = bool(await redis.exists(keys.marker_key(tag)))
    buckets = await redis.keys(f"gn:tl:{{{tag.hex}}}:*")
    state = f"after the flush: warm marker={warm_marker}, day buckets={len(buckets)}"
    # Reading rebuilds the lost celebrity set first; from then on the timeline is trusted: it must be right.
    for _ in range(3):
        expected = ids(await sql.whole_feed(reader))
        assert set(expected) == set(ids(records))
        assert ids(await rig.api.whole_feed(reader)) == expected, f"the feed lost its records; {state}"
        await rig.timeline.reader.drain_background()
    await heal(sql, rig, [reader], within=5)


async def test_flushall_in_the_middle_of_a_rebuild_never_leaves_an_empty_warm_timeline(
    api: Api, database: TestDatabase
) -> None:
    """A rebuild drops the old keys, loads the entries and marks the timeline warm. If Redis loses everything
    (FLUSHALL, a restart, an eviction) just before the marker is written, the marker must not end up over
    empty buckets: that would be an empty cache served as the truth, until the marker expires days later."""
    async with behind_a_proxy(database) as (rig, proxy):
        reader, bob = await rig.api.register(), await rig.api.register()
        await rig.api.follow(reader, bob)
        records = [await night(rig.api, bob, days, 4 + days) for days in (3, 1)]
        await drain_outbox(rig)
        async with flush_before_marker_write(rig, proxy, uuid_of(reader)) as flushed:
            assert ids(await rig.api.whole_feed(reader)) == ids(await api.whole_feed(reader))  # cold: SQL
            await rig.timeline.reader.drain_background()  # the rebuild, hit by the flush
        assert flushed == [True]
        await assert_feed_survives_the_flush(api, rig, reader, records)


async def test_flushall_just_before_an_activity_refresh_never_leaves_an_empty_warm_timeline(
    api: Api, database: TestDatabase
) -> None:
    """A read of a timeline last marked active over an hour ago refreshes the marker in the background. If
    Redis lost the timeline in between (FLUSHALL, restart, eviction), the refresh must not re-create the
    marker over nothing."""
    async with behind_a_proxy(database) as (rig, proxy):
        reader, bob = await rig.api.register(), await rig.api.register()
        await rig.api.follow(reader, bob)
        records = [await night(rig.api, bob, days, 4 + days) for days in (3, 1)]
        await drain_outbox(rig)
        for _ in range(2):
            await rig.api.feed(reader)
            await rig.timeline.reader.drain_background()
        await feeds_match(api, rig, [reader], from_redis=True)
        seen_long_ago = str(time.time() - 2 * 3600)
        await rig.timeline.redis.hset(keys.marker_key(uuid_of(reader)), "seen", seen_long_ago)
        async with flush_before_marker_write(rig, proxy, uuid_of(reader)) as flushed:
            assert ids(await rig.api.whole_feed(reader)) == ids(await api.whole_feed(reader))
            await rig.timeline.reader.drain_background()  # the refresh, preceded by the flush
        assert flushed == [True]
        await assert_feed_survives_the_flush(api, rig, reader, records)


# --- Redis restarted under concurrent traffic ---------------------------------------------------------------


@dataclass
class Traffic:
    client: httpx.AsyncClient
    responses: list[tuple[str, str, int, str]] = field(default_factory=list)

    async def call(self, method: str, url: str, who: Member | None = None, **kwargs: Any) -> httpx.Response:
        headers = who.headers if who is not None else None
        response = await self.client.request(method, url, headers=headers, **kwargs)
        self.responses.append((method, url, response.status_code, response.text[:300]))
        return response

    def count(self) -> int:
        """Requests of the users' traffic so far (the readiness poller's are not counted)."""
        return sum(1 for _, url, _, _ in self.responses if url != "/health/ready")


async def wait_until(condition: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "traffic stalled"
        await asyncio.sleep(0.005)


async def test_redis_restart_under_concurrent_traffic_gives_no_5xx(api: Api, rig: Rig) -> None:
    users = [await rig.api.register() for _ in range(6)]
    star = users[0]  # followed by everyone else: a celebrity
    for index, user in enumerate(users):
        for step in (1, 2):
            target = users[(index + step) % len(users)]
            if target is not star:
                await rig.api.follow(user, target)
        if user is not star:
            await rig.api.follow(user, star)
    for index, user in enumerate(users):
        await night(rig.api, user, 6.5 - index / 10, 5 + index)
    await drain_outbox(rig)
    for _ in range(2):
        for user in users:
            await rig.api.feed(user)
        await rig.timeline.reader.drain_background()
    await feeds_match(api, rig, users, from_redis=True)

    traffic = Traffic(rig.client)
    base: datetime = ago(days=5)
    steps = 5
    done = asyncio.Event()
    restarts_at: list[int] = []

    async def life(index: int, me: Member) -> None:
        # Someone this user does not follow yet (it follows the next two and the star).
        target = next(
            users[(index + k) % len(users)] for k in (3, 4) if users[(index + k) % len(users)] is not star
        )
        following = False
        created: list[str] = []
        for step in range(steps):
            start = base + timedelta(hours=3 * step, minutes=index)
            await traffic.call("GET", "/sleep_records/followings", me, params={"per_page": 2})
            await traffic.call("POST", "/sleep_records/clock_in", me, json={"clocked_in_at": iso(start)})
            await traffic.call("GET", "/sleep_records/followings", me, params={"per_page": 3})
            end = start + timedelta(hours=1, minutes=step * 7 + index)
            closed = await traffic.call(
                "POST", "/sleep_records/clock_out", me, json={"clocked_out_at": iso(end)}
            )
            if closed.status_code == 200:
                created.append(closed.json()["sleep_record"]["id"])
            action = "unfollow" if following else "follow"
            await traffic.call("POST", f"/socials/{action}/{target.id}", me)
            following = not following
            await traffic.call("GET", "/sleep_records/followings", me, params={"per_page": 2})
            if step in (2, 4) and created:
                await traffic.call("DELETE", f"/sleep_records/{created.pop(0)}", me)

    async def worker() -> None:  # the outbox keeps draining, as the embedded worker would
        while not done.is_set():
            await drain_outbox(rig)
            await asyncio.sleep(0.01)

    async def health() -> None:
        while not done.is_set():
            await traffic.call("GET", "/health/ready")
            await asyncio.sleep(0.02)

    async def chaos() -> None:
        total = len(users) * (steps * 6 + 2)  # see life(): six calls a step, two deletes
        for fraction in (0.25, 0.6):
            threshold = total * fraction

            def reached(threshold: float = threshold) -> bool:
                return traffic.count() >= threshold

            await wait_until(reached)
            restarts_at.append(traffic.count())
            await asyncio.to_thread(rig.server.restart)

    async def everyone() -> None:
        try:
            await asyncio.gather(*(life(index, user) for index, user in enumerate(users)))
        finally:
            done.set()

    await asyncio.gather(everyone(), worker(), health(), chaos())

    failures = [response for response in traffic.responses if response[2] >= 500]
    assert not failures, failures
    unexpected = [
        response for response in traffic.responses if not 200 <= response[2] < 300
    ]  # each user's requests are sequential and consistent: every one of them must succeed
    assert not unexpected, unexpected
    assert len(restarts_at) == 2, restarts_at
    assert restarts_at[-1] < traffic.count(), "the restarts came after the traffic"

    await heal(api, rig, users)
    health_now = await ready(rig)
    assert (health_now["status"], health_now["redis"]) == ("ok", "ok")
