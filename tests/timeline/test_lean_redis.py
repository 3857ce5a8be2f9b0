"""The lean Redis client of the feed page's two reads (``timeline.lean_redis``), against real redis-servers:
the same replies and exceptions as redis-py, pipelined calls each answered with their own reply, and
failures (a server killed, stopped, or refusing a password) that fail fast and heal on the next call.

Destructive tests run their own redis-server; the others share one private server of the module. What
depends on the transport runs on asyncio's event loop and on uvloop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import date, timedelta
from typing import Any

import pytest
import pytest_asyncio
import uvloop
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from goodnight.config import Settings
from goodnight.feed.position import encode_position
from goodnight.redis_client import REDIS_UNAVAILABLE, RedisClient, connect
from goodnight.timeline import keys
from goodnight.timeline.lean_redis import (
    MAX_REPLIES_PER_KEY,
    Address,
    LeanRedis,
    TrackedValues,
    plain_address,
)
from goodnight.timeline.store import TimelineStore
from tests.support.api import Api
from tests.support.apps import AppTimeline
from tests.support.databases import TestDatabase
from tests.support.logs import app_logs
from tests.support.redis_server import RedisServer
from tests.timeline.test_timeline_faults import (
    Cast,
    Rig,
    cast_and_warm,
    drain_outbox,
    feeds_match,
    heal,
    running_rig,
)

PASSWORD = "s3cret pass"  # a space: the URL must be unquoted as redis-py unquotes it
QUOTED_PASSWORD = "s3cret%20pass"
# A script that never returns: its command stays in flight until the server dies.
BUSY_LOOP = "while true do end"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    started = RedisServer().start()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to kill, stop or restart."""
    started = RedisServer().start()
    try:
        yield started
    finally:
        started.close()


def lean_client(url: str, **overrides: Any) -> LeanRedis:
    """The lean client as production configures it (the default timeouts, tracking on), unless told."""
    lean = LeanRedis.for_settings(Settings(redis_url=url, **overrides))
    assert lean is not None
    return lean


@contextlib.asynccontextmanager
async def clients(url: str) -> AsyncIterator[tuple[Redis, LeanRedis]]:
    """redis-py as production configures it, and the lean client, on the same server."""
    redis = connect(Settings(redis_url=url))
    assert isinstance(redis, Redis)
    lean = lean_client(url)
    try:
        yield redis, lean
    finally:
        await lean.close()
        await redis.aclose()


OnLoop = Callable[[Coroutine[Any, Any, None]], None]
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def on_loop(request: pytest.FixtureRequest) -> OnLoop:
    """Runs a test's body on an event loop of its own: asyncio's, and uvloop's, which served processes run
    (its transports are not asyncio's)."""

    def run(body: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            runner.run(body)

    return run


@pytest_asyncio.fixture
async def both(server: RedisServer) -> AsyncIterator[tuple[Redis, LeanRedis]]:
    async with clients(server.url) as pair:
        yield pair


# --- Where the lean client is used -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/2", Address("127.0.0.1", 6380, 2)),
        ("redis://cache", Address("cache", 6379, 0)),
        ("redis://:p%40ss@cache:7000/0", Address("cache", 7000, 0, None, "p@ss")),
        ("redis://reader:pw@cache/", Address("cache", 6379, 0, "reader", "pw")),
        ("redis://[::1]:6379", Address("::1", 6379, 0)),
        ("rediss://cache:6379/0", None),  # TLS
        ("unix:///run/redis.sock", None),
        ("redis://cache:6379/0?protocol=3", None),  # URL options only redis-py knows
        ("redis://cache:6379/zero", None),
    ],
)
def test_only_plain_redis_urls_get_a_lean_client(url: str, expected: Address | None) -> None:
    assert plain_address(url) == expected
    lean = LeanRedis.for_settings(Settings(redis_url=url))
    assert (lean.address if lean is not None else None) == expected


def test_no_lean_client_for_a_cluster_or_without_redis() -> None:
    assert LeanRedis.for_settings(Settings(redis_url="redis://127.0.0.1:7000/0", redis_cluster=True)) is None
    assert LeanRedis.for_settings(Settings(redis_url=None)) is None


def test_the_app_reads_pages_through_the_lean_client(timeline: AppTimeline) -> None:
    assert timeline.store.pages.lean is not None


# --- Replies exactly as redis-py returns them --------------------------------------------------------------


async def warm_timeline(redis: Redis, reader: uuid.UUID, per_day: dict[date, int]) -> list[bytes]:
    """A warm marker and ``per_day`` members in each day's bucket; returns the members, newest first."""
    await redis.hset(keys.marker_key(reader), mapping={"seen": "1700000000.25", "follows": "7"})
    members: list[bytes] = []
    for day, count in per_day.items():
        if count:
            added = [encode_position(3600 * (n + 1), uuid.uuid4()) for n in range(count)]
            await redis.zadd(keys.bucket_key(reader, day), dict.fromkeys(added, 0))
            members += added
    return sorted(members, reverse=True)


async def test_page_reads_equal_redis_pys(both: tuple[Redis, LeanRedis]) -> None:
    redis, lean = both
    through_redis_py, through_lean = TimelineStore(redis).pages, TimelineStore(redis, lean).pages
    last = date(2024, 3, 9)
    first = last - timedelta(days=7)
    warm, empty, cold = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    members = await warm_timeline(redis, warm, {last: 5, last - timedelta(days=2): 1, first: 3})
    await warm_timeline(redis, empty, {})
    await redis.hdel(keys.marker_key(empty), "follows")  # read as 0

    for reader, after, count in [
        (warm, None, 3),
        (warm, members[2], 3),
        (warm, members[-1], 10),  # nothing after the last member: every bucket empty
        (empty, None, 3),
        (cold, None, 3),
    ]:
        expected = await through_redis_py.read(reader, first, last, after, count)
        found = await through_lean.read(reader, first, last, after, count)
        if expected is None:
            assert found is None
        else:
            assert found is not None
            assert (found.candidates, found.marker) == (expected.candidates, expected.marker)
            assert found.lean is not None
            assert found.lean.celebrity_version is None
    assert await through_lean.read(cold, first, last, None, 3) is None

    renderings = {keys.rendering_key_of(member): f"item {n}" for n, member in enumerate(members[:4])}
    renderings[keys.rendering_key_of(members[4])] = ""  # a deleted record's tombstone
    await redis.mset(renderings)
    for version in (None, b"42"):
        if version is not None:
            await redis.set(keys.CELEBRITIES_VERSION, version)
        for asked in (members, members[6:], []):  # some missing, all missing, none asked
            expected_renderings = await through_redis_py.renderings(asked)
            assert await through_lean.renderings(asked) == expected_renderings
            assert expected_renderings[0] == version


@pytest.mark.parametrize(
    "script",
    [
        "return {1, 'two', false, {3, {}, {'four', -5}}, 'caf\\195\\169'}",
        "return false",
        "return 42",
        "return {}",
        "return redis.status_reply('FINE')",
        "return {1, redis.error_reply('NESTED failure')}",
    ],
)
async def test_reply_shapes_equal_redis_pys(both: tuple[Redis, LeanRedis], script: str) -> None:
    redis, lean = both
    expected = await redis.eval(script, 0)
    found = await lean.execute("EVAL", script, 0)
    assert repr(found) == repr(expected)  # exceptions nested in a reply compare by type and text


@pytest.mark.parametrize(
    ("command", "raised"),
    [
        (("EVALSHA", "0" * 40, 0), NoScriptError),
        (("EVAL", "return redis.error_reply('MY failure')", 0), ResponseError),
        (("EVAL", "return {", 0), ResponseError),
        (("MGET",), ResponseError),
    ],
)
async def test_error_replies_raise_redis_pys_exceptions(
    both: tuple[Redis, LeanRedis], command: tuple[Any, ...], raised: type[Exception]
) -> None:
    redis, lean = both
    with pytest.raises(raised) as by_redis_py:
        await redis.execute_command(*command)
    with pytest.raises(raised) as by_lean:
        await lean.execute(*command)
    assert type(by_lean.value) is type(by_redis_py.value)
    assert str(by_lean.value) == str(by_redis_py.value)
    assert await lean.mget(["lean:after-an-error"]) == [None]  # the connection goes on


async def test_transaction_replies_equal_redis_pys(both: tuple[Redis, LeanRedis]) -> None:
    redis, lean = both
    await redis.hset("lean:tx:hash", mapping={"seen": "1.5"})
    await redis.zadd("lean:tx:set", {"a": 0, "b": 0, "c": 0})
    commands: list[tuple[Any, ...]] = [
        ("HMGET", "lean:tx:hash", "seen", "follows"),
        ("ZRANGE", "lean:tx:set", "+", "-", "BYLEX", "REV", "LIMIT", 0, 2),
        ("ZRANGE", "lean:tx:none", "+", "-", "BYLEX", "REV", "LIMIT", 0, 2),
    ]
    pipe = redis.pipeline(transaction=True)
    for command in commands:
        pipe.execute_command(*command)
    expected = await pipe.execute()
    assert await lean.transaction(commands) == expected == [[b"1.5", None], [b"c", b"b"], []]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (("ZRANGE", "lean:tx:string", "+", "-", "BYLEX"), "WRONGTYPE"),  # fails while EXEC runs
        (("ZRANGE", "lean:tx:string"), "Transaction discarded"),  # refused while queued
    ],
)
async def test_an_error_in_a_transaction_raises_and_the_stream_stays_in_step(
    both: tuple[Redis, LeanRedis], command: tuple[Any, ...], message: str
) -> None:
    redis, lean = both
    await redis.set("lean:tx:string", "plain")
    with pytest.raises(ResponseError, match=message):
        await lean.transaction([("GET", "lean:tx:string"), command])
    # The transaction's every reply was read: the next command gets its own.
    assert await lean.mget(["lean:tx:string"]) == [b"plain"]
    assert await lean.transaction([("GET", "lean:tx:string")]) == [b"plain"]


# --- Pipelining ---------------------------------------------------------------------------------------------


def test_concurrent_calls_each_get_their_own_reply_on_one_connection(
    on_loop: OnLoop, server: RedisServer
) -> None:
    async def body() -> None:
        async with clients(server.url) as (redis, lean):
            values = {f"lean:many:{n}": f"value {n}" for n in range(400)}
            await redis.mset(values)
            connection = await lean.execute("CLIENT", "ID")

            def call(n: int, name: str) -> Any:
                if n % 2:
                    return lean.mget([name, "lean:missing"])
                return lean.transaction([("ECHO", name), ("GET", name)])

            replies = await asyncio.gather(*(call(n, name) for n, name in enumerate(values)))
            for n, (name, value) in enumerate(values.items()):
                expected = [value.encode(), None] if n % 2 else [name.encode(), value.encode()]
                assert replies[n] == expected
            assert await lean.execute("CLIENT", "ID") == connection

    on_loop(body())


class CountingTransport:
    """A transport that records what is written through it (uvloop's transports cannot be patched)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_commands_sent_in_one_turn_of_the_loop_go_out_in_one_write(
    on_loop: OnLoop, server: RedisServer
) -> None:
    async def body() -> None:
        async with clients(server.url) as (redis, lean):
            await redis.set("lean:turn", "value")
            await lean.mget(["lean:turn"])  # connected
            connection = lean._connection
            assert connection is not None
            counting = CountingTransport(connection._transport)
            connection._transport = counting  # type: ignore[assignment]
            replies = await asyncio.gather(
                *(lean.mget(["lean:turn", f"lean:none:{n}"]) for n in range(20)),
                lean.transaction([("GET", "lean:turn")]),
            )
            assert replies == [[b"value", None]] * 20 + [[b"value"]]
            assert len(counting.writes) == 1

    on_loop(body())


async def written() -> None:
    """Until a command a task just started sending is written: the task sends it in the next turn of the
    loop, and the client writes what was sent at the end of that turn."""
    for _ in range(2):
        await asyncio.sleep(0)


def test_a_cancelled_caller_does_not_desync_the_stream(on_loop: OnLoop, server: RedisServer) -> None:
    async def body() -> None:
        async with clients(server.url) as (redis, lean):
            await redis.mset({f"lean:cancel:{n}": n for n in range(100)})
            connection = await lean.execute("CLIENT", "ID")
            for n in range(0, 100, 2):
                abandoned = asyncio.create_task(lean.mget([f"lean:cancel:{n}"]))
                await written()  # its reply not yet read
                abandoned.cancel()
                assert await lean.mget([f"lean:cancel:{n + 1}"]) == [str(n + 1).encode()]
                with pytest.raises(asyncio.CancelledError):
                    await abandoned
            assert await lean.execute("CLIENT", "ID") == connection

    on_loop(body())


def test_a_caller_cancelled_while_connecting_leaves_the_others_connected(
    on_loop: OnLoop,
    server: RedisServer,
) -> None:
    async def body() -> None:
        async with clients(server.url) as (redis, lean):
            await redis.set("lean:connecting", "yes")
            first = asyncio.create_task(lean.mget(["lean:connecting"]))
            second = asyncio.create_task(lean.mget(["lean:connecting"]))
            await asyncio.sleep(0)  # both wait for the one connection attempt
            first.cancel()
            assert await second == [b"yes"]
            with pytest.raises(asyncio.CancelledError):
                await first

    on_loop(body())


@contextlib.asynccontextmanager
async def not_redis(answer: bytes) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that is not Redis (a misconfigured URL, a broken peer): it writes ``answer`` whatever it
    is sent. Yields its URL and a list that grows by one per connection accepted."""
    accepted: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(len(accepted))
        writers.append(writer)
        while await reader.read(4096):
            writer.write(answer)
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0", accepted
    finally:
        listener.close()
        for writer in writers:
            writer.close()


def test_a_protocol_error_fails_the_call_and_closes_the_connection(on_loop: OnLoop) -> None:
    async def body() -> None:
        async with not_redis(b"HTTP/1.1 400 Bad Request\r\n\r\n") as (url, accepted):
            lean = lean_client(url, redis_client_cache_size=0)  # no handshake: the first reply is the call's
            try:
                for attempt in (1, 2):
                    with pytest.raises(InvalidResponse, match="Protocol error"):
                        await lean.mget(["key"])
                    assert len(accepted) == attempt  # the broken connection is not reused
            finally:
                await lean.close()

    on_loop(body())


def test_a_reply_no_command_asked_for_closes_the_connection(on_loop: OnLoop) -> None:
    async def body() -> None:
        async with not_redis(b"+OK\r\n+OK\r\n") as (url, accepted):
            lean = lean_client(url, redis_client_cache_size=0)
            try:
                assert await lean.execute("PING") == b"OK"
                assert await lean.execute("PING") == b"OK"  # on a new connection: the stream was out of step
                assert len(accepted) == 2
            finally:
                await lean.close()

    on_loop(body())


# --- Failures: fast, mapped to redis-py's exceptions, healed by the next call ------------------------------


def test_a_killed_server_fails_calls_at_once_and_a_restarted_one_serves_again(
    on_loop: OnLoop,
    own_server: RedisServer,
) -> None:
    async def body() -> None:
        async with clients(own_server.url) as (_, lean):
            assert await lean.mget(["key"]) == [None]
            in_flight = asyncio.create_task(lean.execute("EVAL", BUSY_LOOP, 0))
            await written()  # the server is busy with it when it dies
            own_server.stop()  # SIGKILL
            # A connection lost, not a timeout: the server's end closed, nobody waits for a timer.
            with pytest.raises(RedisConnectionError, match=r"Connection closed by server|Connection reset"):
                await in_flight
            with pytest.raises(RedisConnectionError, match="Error connecting to") as refused:
                await lean.mget(["key"])  # refused: nothing listens on the port any more
            assert isinstance(refused.value, REDIS_UNAVAILABLE)

            own_server.start()  # same port
            assert await lean.mget(["key"]) == [None]

            # Killed and restarted while idle: the lean client saw the connection close and the next call
            # connects again, without failing.
            own_server.stop()
            await asyncio.sleep(0.1)  # the connection's end is read
            own_server.start()
            assert await lean.mget(["key"]) == [None]

    on_loop(body())


def test_a_stopped_server_times_calls_out_and_a_resumed_one_serves_again(
    on_loop: OnLoop,
    own_server: RedisServer,
) -> None:
    async def body() -> None:
        async with clients(own_server.url) as (_, lean):
            assert await lean.mget(["key"]) == [None]
            own_server.pause()  # SIGSTOP
            try:
                calls = [asyncio.create_task(lean.mget(["key"])) for _ in range(5)]
                # One command timed out: the connection is closed and every call in flight fails with it.
                for call in calls:
                    with pytest.raises(RedisTimeoutError, match="Timeout reading from"):
                        await call
                # A new connection is accepted by the kernel on the stopped server's behalf; its command times
                # out the same way.
                with pytest.raises(RedisTimeoutError, match="Timeout reading from") as timed_out:
                    await lean.mget(["key"])
                assert isinstance(timed_out.value, REDIS_UNAVAILABLE)
            finally:
                own_server.resume()  # SIGCONT
            assert await lean.mget(["key"]) == [None]

    on_loop(body())


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose listener never accepts and whose backlog is full: a connection attempt hangs, as to a
    host that drops packets."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            yield port
        finally:
            for filler in fillers:
                filler.close()


def test_a_connection_that_does_not_open_times_out(on_loop: OnLoop) -> None:
    async def body() -> None:
        with unanswered_port() as port:
            lean = lean_client(f"redis://127.0.0.1:{port}/0")
            with pytest.raises(RedisTimeoutError, match="Timeout connecting to"):
                await lean.mget(["key"])
            await lean.close()

    on_loop(body())


def test_both_clients_wait_for_a_connection_as_long_as_the_settings_say(on_loop: OnLoop) -> None:
    async def body() -> None:
        with unanswered_port() as port:
            settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_connect_timeout_seconds=3.0)
            lean = LeanRedis.for_settings(settings)
            assert lean is not None
            redis = connect(settings)
            attempts = [asyncio.ensure_future(lean.mget(["key"])), asyncio.ensure_future(redis.get("key"))]
            await asyncio.sleep(0.8)  # past the default half second, well inside the three configured
            assert not any(attempt.done() for attempt in attempts)
            for attempt in attempts:
                attempt.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)
            await lean.close()
            await redis.aclose()

    on_loop(body())


def test_closing_fails_the_calls_in_flight_and_lets_a_connection_attempt_end(
    on_loop: OnLoop, own_server: RedisServer
) -> None:
    async def body() -> None:
        async with clients(own_server.url) as (_, lean):
            in_flight = asyncio.create_task(lean.execute("EVAL", BUSY_LOOP, 0))
            await asyncio.sleep(0)  # connecting
            await lean.close()  # the attempt ends first, then its command is failed
            with pytest.raises(RedisConnectionError, match="The client closed the connection"):
                await in_flight
        own_server.restart()  # out of its busy script

        with unanswered_port() as port:
            lean = lean_client(f"redis://127.0.0.1:{port}/0")
            connecting = asyncio.create_task(lean.mget(["key"]))
            await asyncio.sleep(0)
            await lean.close()
            assert connecting.done()
            with pytest.raises(RedisTimeoutError, match="Timeout connecting to"):
                await connecting

    on_loop(body())


def test_password_and_database_are_sent_on_connect(on_loop: OnLoop) -> None:
    async def body() -> None:
        protected = RedisServer("--requirepass", PASSWORD).start()
        base = f"127.0.0.1:{protected.port}"
        try:
            async with clients(f"redis://:{QUOTED_PASSWORD}@{base}/3") as (redis, lean):
                await redis.set("lean:db", "three")
                assert await lean.mget(["lean:db"]) == [b"three"]
                assert await lean.transaction([("GET", "lean:db")]) == [b"three"]
            async with clients(f"redis://default:{QUOTED_PASSWORD}@{base}/0") as (redis, lean):
                assert await lean.mget(["lean:db"]) == [None]  # database 0: not there
            for url in (f"redis://:wrong@{base}/3", f"redis://{base}/3"):  # a wrong password, none at all
                async with clients(url) as (redis, lean):
                    with pytest.raises(AuthenticationError) as by_redis_py:
                        await redis.mget(["lean:db"])
                    with pytest.raises(AuthenticationError) as by_lean:
                        await lean.mget(["lean:db"])
                    assert str(by_lean.value) == str(by_redis_py.value)
        finally:
            protected.close()

    on_loop(body())


# --- Client-side caching: values kept until Redis says they changed -------------------------------------


def test_a_read_in_flight_across_an_invalidation_is_not_kept() -> None:
    tracked = TrackedValues(capacity=10)
    command = ("GET", "lean:k")
    entry = tracked.open("lean:k")  # the read is sent
    tracked.invalidate([b"lean:k"])  # parsed before its reply is stored: it may be for what the read saw
    tracked.store("lean:k", entry, command, b"old")
    assert tracked.value("lean:k") is None
    entry = tracked.open("lean:k")
    tracked.store("lean:k", entry, command, b"new")
    assert (tracked.value("lean:k"), tracked.holds("lean:k", entry), len(tracked)) == (b"new", True, 1)
    tracked.invalidate(None)  # FLUSHALL, FLUSHDB
    assert len(tracked) == 0
    assert not tracked.holds("lean:k", entry)


def test_tracked_values_keep_at_most_their_capacity_oldest_out_first() -> None:
    tracked = TrackedValues(capacity=3)
    names = [f"lean:{n}" for n in range(5)]
    for name in names:
        tracked.store(name, tracked.open(name), ("GET", name), name.encode())
    assert [tracked.value(name) for name in names] == [None, None, b"lean:2", b"lean:3", b"lean:4"]


def test_a_key_keeps_the_replies_of_a_few_reads_only() -> None:
    tracked = TrackedValues(capacity=100)
    entry = tracked.open("lean:scrolled")
    for page in range(MAX_REPLIES_PER_KEY + 1):
        tracked.store("lean:scrolled", entry, ("ZRANGE", "lean:scrolled", page), [b"member"])
    assert len(entry) == len(tracked) == 1  # emptied when full, then the last stored


def test_capacity_counts_replies_and_keys_read_but_missing() -> None:
    tracked = TrackedValues(capacity=4)
    scrolled = tracked.open("lean:scrolled")
    for page in range(3):
        tracked.store("lean:scrolled", scrolled, ("ZRANGE", "lean:scrolled", page), [b"member"])
    tracked.store("lean:a", tracked.open("lean:a"), ("GET", "lean:a"), b"a")
    assert len(tracked) == 4
    tracked.store("lean:b", tracked.open("lean:b"), ("GET", "lean:b"), b"b")  # the oldest key goes, all of it
    assert (len(tracked), tracked.holds("lean:scrolled", scrolled)) == (2, False)
    missing = [tracked.open(f"lean:none{n}") for n in range(4)]  # read, found missing: nothing stored
    assert len(tracked) == 0
    assert tracked.holds("lean:none3", missing[3])
    assert not tracked.holds("lean:a", {})


async def held(lean: LeanRedis) -> TrackedValues:
    """The lean connection's tracked values, current as of a transaction's reply."""
    _, tracked = await lean.read_tracked([])  # nothing to read: a PING
    assert tracked is not None
    return tracked


async def test_tracked_values_go_when_another_client_changes_them(both: tuple[Redis, LeanRedis]) -> None:
    redis, lean = both
    await redis.mset({"lean:tr:a": "one", "lean:tr:b": "two", "lean:tr:c": "three"})
    names = ["lean:tr:a", "lean:tr:b", "lean:tr:c", "lean:tr:none"]
    assert await lean.mget_tracked(names) == [b"one", b"two", b"three", None]
    tracked = await held(lean)
    assert [tracked.value(name) for name in names] == [b"one", b"two", b"three", None]
    assert await lean.mget(["lean:tr:untracked"]) == [None]  # a plain MGET keeps nothing

    await redis.set("lean:tr:a", "changed")
    await redis.delete("lean:tr:b")
    tracked = await held(lean)  # the invalidations arrive before this reply
    assert [tracked.value(name) for name in names] == [None, None, b"three", None]
    assert await lean.mget_tracked(names[:2]) == [b"changed", None]
    assert (await held(lean)).value("lean:tr:a") == b"changed"

    await redis.set("lean:tr:short", "lived", px=200)
    assert await lean.mget_tracked(["lean:tr:short"]) in ([b"lived"], [None])  # None: a very slow machine
    await asyncio.sleep(0.3)
    assert await redis.get("lean:tr:short") is None  # expired (and deleted, at this access at the latest)
    assert (await held(lean)).value("lean:tr:short") is None

    await redis.flushdb()
    assert len(await held(lean)) == 0


async def command_calls(redis: RedisClient, *names: str) -> list[int]:
    stats = await redis.info("commandstats")
    return [int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names]


async def test_held_replies_are_read_from_memory_after_one_ping(both: tuple[Redis, LeanRedis]) -> None:
    redis, lean = both
    await redis.set("lean:rt:a", "one")
    await redis.zadd("lean:rt:z", {"m": 0, "n": 0})
    reads: list[tuple[str, tuple[Any, ...]]] = [
        ("lean:rt:a", ("GET", "lean:rt:a")),
        ("lean:rt:z", ("ZRANGE", "lean:rt:z", "+", "-", "BYLEX", "REV", "LIMIT", 0, 1)),
        ("lean:rt:z", ("ZRANGE", "lean:rt:z", "(n", "-", "BYLEX", "REV", "LIMIT", 0, 1)),  # the next page
        ("lean:rt:none", ("GET", "lean:rt:none")),
    ]
    expected = [b"one", [b"n"], [b"m"], None]
    assert (await lean.read_tracked(reads))[0] == expected
    before = await command_calls(redis, "get", "zrange", "ping", "exec")
    assert (await lean.read_tracked(reads))[0] == expected
    assert await command_calls(redis, "get", "zrange", "ping", "exec") == [
        *before[:2],
        before[2] + 1,
        before[3],
    ]

    await redis.zadd("lean:rt:z", {"o": 0})  # the set's replies go; the string's stay
    assert (await lean.read_tracked(reads))[0] == [b"one", [b"o"], [b"m"], None]
    after = await command_calls(redis, "get", "zrange")
    assert after == [before[0], before[1] + 2]


# Holds Redis busy for 0.3 s, then changes KEYS[1]: whatever another client sends meanwhile waits behind it.
BUSY_THEN_SET = """
local started = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - started[1]) * 1000000 + (now[2] - started[2]) > 300000
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


async def test_a_held_reply_changed_before_the_round_trip_is_read_again(
    both: tuple[Redis, LeanRedis],
) -> None:
    redis, lean = both
    await redis.set("lean:race", "before")
    reads: list[tuple[str, tuple[Any, ...]]] = [
        ("lean:race", ("GET", "lean:race")),
        ("lean:x", ("GET", "lean:x")),
    ]
    assert (await lean.read_tracked(reads))[0] == [b"before", None]  # held from now on
    busy = asyncio.create_task(redis.eval(BUSY_THEN_SET, 1, "lean:race", "after"))
    await asyncio.sleep(0.1)  # the script runs; the read below is taken from memory, then waits for its PING
    replies, tracked = await lean.read_tracked(reads)
    # The change came before the PING's reply: the read is made again, not answered from memory.
    assert replies == [b"after", None]
    assert await busy == 1
    assert tracked is not None
    assert (await lean.read_tracked(reads))[0] == [b"after", None]


async def test_a_lost_connection_loses_its_tracked_values(both: tuple[Redis, LeanRedis]) -> None:
    redis, lean = both
    await redis.set("lean:lost", "before")
    assert await lean.mget_tracked(["lean:lost"]) == [b"before"]
    first = await held(lean)
    assert first.value("lean:lost") == b"before"
    await redis.client_kill_filter(_type="normal", skipme=True)  # the lean connection among them
    await redis.set("lean:lost", "after")  # no connection to tell
    with contextlib.suppress(RedisConnectionError):  # the loss, unless seen already: the next call reconnects
        await lean.mget(["lean:lost"])
    second = await held(lean)  # a new connection: nothing held
    assert second is not first
    assert len(second) == 0
    assert await lean.mget_tracked(["lean:lost"]) == [b"after"]


def test_a_server_without_hello_is_read_without_tracking(on_loop: OnLoop) -> None:
    async def body() -> None:
        old = RedisServer("--rename-command", "HELLO", '""').start()
        try:
            async with clients(old.url) as (_, lean):
                assert await lean.execute("SET", "lean:old", "value") == b"OK"
                assert await lean.mget_tracked(["lean:old"]) == [b"value"]
                assert await lean.read_tracked([("lean:old", ("GET", "lean:old"))]) == ([b"value"], None)
        finally:
            old.close()

    on_loop(body())


def test_a_cache_size_of_zero_turns_tracking_off(on_loop: OnLoop, server: RedisServer) -> None:
    async def body() -> None:
        lean = lean_client(server.url, redis_client_cache_size=0)
        assert lean is not None
        try:
            assert await lean.mget_tracked(["lean:off"]) == [None]
            assert await lean.read_tracked([("lean:off", ("GET", "lean:off"))]) == ([None], None)
        finally:
            await lean.close()

    on_loop(body())


# --- The feed reader on the lean client -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def warm_rig(api: Api, database: TestDatabase) -> AsyncIterator[tuple[RedisServer, Rig, Cast]]:
    """An app on a redis-server of its own, reading pages through the lean client, its cast's feeds read."""
    server = RedisServer().start()
    try:
        async with running_rig(database, server, server.url) as rig:
            assert rig.timeline.store.pages.lean is not None
            yield server, rig, await cast_and_warm(rig, api)
    finally:
        server.close()


async def test_the_feed_reader_trips_its_breaker_when_redis_is_killed(
    api: Api, database: TestDatabase
) -> None:
    async with warm_rig(api, database) as (server, rig, cast):
        server_address = f"127.0.0.1:{server.port}"
        breaker = rig.timeline.reader.gate.breaker
        assert breaker.allows()
        served, declined = rig.timeline.reader.served, rig.timeline.reader.declined

        server.stop()
        with app_logs() as logs:
            page = await rig.api.feed(cast.reader)
        assert page.status_code == 200, page.text
        assert page.json() == (await api.feed(cast.reader)).json()  # from SQL
        assert not breaker.allows()
        assert (rig.timeline.reader.served, rig.timeline.reader.declined) == (served, declined + 1)
        # The lean client's error (redis-py words its own "Error 111 connecting to ...").
        lean_errors = (
            f"Error connecting to {server_address}",
            f"Error while reading from {server_address}",
        )
        warnings = [record.getMessage() for record in logs if record.levelname == "WARNING"]
        assert any(
            "serving the feed from SQL" in line and any(error in line for error in lean_errors)
            for line in warnings
        ), warnings

        server.start()  # empty: the timelines are rebuilt, then served from Redis again
        await asyncio.sleep(1.1)  # past the breaker's cool-down
        await heal(api, rig, cast.readers)


async def test_pages_take_held_renderings_and_see_every_change_to_them(
    api: Api, database: TestDatabase
) -> None:
    async with warm_rig(api, database) as (_, rig, cast):  # every reader's pages read: their items are held
        redis = rig.timeline.redis
        before = await command_calls(redis, "mget")
        await feeds_match(api, rig, cast.readers, from_redis=True)
        assert await command_calls(redis, "mget") == before  # no page fetched a rendering

        renamed = await rig.api.rename(cast.alice, "Alice Anew")
        assert renamed.status_code == 200, renamed.text
        gone = cast.records["bob"][0]["id"]
        deleted = await rig.client.delete(f"/sleep_records/{gone}", headers=cast.bob.headers)
        assert deleted.status_code == 204, deleted.text
        await drain_outbox(rig)  # re-renders alice's items, turns bob's record into a tombstone
        await feeds_match(api, rig, cast.readers, from_redis=True)
        items = (await rig.api.feed(cast.reader)).json()["data"]
        assert "Alice Anew" in {item["user"]["name"] for item in items}
        assert gone not in {item["id"] for item in items}
