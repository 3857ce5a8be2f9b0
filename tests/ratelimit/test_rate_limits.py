"""Rate limits: every policy refuses the request that crosses it, windows slide, a success clears a username,
Redis shares the counts between processes and falls back to memory when it goes away, X-Forwarded-For is
believed only from trusted proxies, health and docs are never limited, and ``off`` means off."""

from __future__ import annotations

import asyncio
import itertools
import math
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from limits import parse
from redis.asyncio import Redis

from goodnight.config import ConfigurationError, Settings
from goodnight.ratelimit.client_ip import ClientAddress, parse_networks
from goodnight.ratelimit.windows import KEY_PREFIX, RedisWindows
from tests.support.api import PASSWORD, Api, Member
from tests.support.databases import TestDatabase, settings_for
from tests.support.envelope import assert_error
from tests.support.logs import app_logs
from tests.support.processes import clean_env, run_cli, serving
from tests.support.rate_limits import (
    assert_limit_headers,
    assert_no_limit_headers,
    assert_rate_limited,
    client_from,
    header_names,
    limited_app,
    limiter_of,
)
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.redis_server import RedisServer

CLIENT = "203.0.113.10"
OTHER_CLIENT = "203.0.113.20"
# Users the tests need are registered from here, so setting them up spends no test address's allowance.
SETUP_CLIENT = "192.0.2.1"
WRONG_PASSWORD = "not the password"
_names = itertools.count(1)


def unique_name(prefix: str = "rl") -> str:
    return f"{prefix}{next(_names)}_{time.monotonic_ns() % 1_000_000}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes().start()
    yield nodes
    nodes.close()


def flushed(server: RedisServer) -> RedisServer:
    with redis.Redis.from_url(server.url) as connection:
        connection.flushall()
    return server


def redis_store(url: str, **more: object) -> dict[str, object]:
    return {"redis_url": url, "embedded_worker": False, **more}


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis_server: RedisServer) -> dict[str, object]:
    """Settings for where the counts live: this process's memory, or a (flushed) Redis."""
    if request.param == "memory":
        return {}
    return redis_store(flushed(redis_server).url)


async def register(app: FastAPI) -> Member:
    async with client_from(app, SETUP_CLIENT) as http:
        return await Api(http).register(unique_name())


async def login(http: httpx.AsyncClient, username: str, password: str = WRONG_PASSWORD) -> httpx.Response:
    return await http.post("/auth/login", json={"username": username, "password": password})


def count_hashes(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Counts the password checks the app runs from now on."""
    passwords = app.state.services.passwords
    verify = passwords.verify
    calls = 0

    async def counting(password_hash: str | None, password: str) -> bool:
        nonlocal calls
        calls += 1
        result: bool = await verify(password_hash, password)
        return result

    monkeypatch.setattr(passwords, "verify", counting)
    return lambda: calls


# --- Every policy ---

Send = Callable[[httpx.AsyncClient, Member], Awaitable[httpx.Response]]
POLICY_REQUESTS: dict[str, tuple[Send, int]] = {
    "login_ip": (lambda http, _: login(http, unique_name("nobody")), 401),
    "signup": (
        lambda http, _: http.post("/users", json={"username": unique_name(), "password": PASSWORD}),
        201,
    ),
    "anonymous": (lambda http, _: http.get("/users/me"), 401),
    "user": (lambda http, member: http.get("/users/me", headers=member.headers), 200),
}


@pytest.mark.parametrize("policy", list(POLICY_REQUESTS))
async def test_the_request_that_crosses_a_policy_is_refused(
    sqlite: TestDatabase, store: dict[str, object], policy: str
) -> None:
    send, status = POLICY_REQUESTS[policy]
    async with limited_app(sqlite.url, **store, **{f"rate_limit_{policy}": "3/minute"}) as app:
        member, other_member = await register(app), await register(app)
        async with client_from(app, CLIENT) as http:
            for remaining in (2, 1, 0):
                response = await send(http, member)
                assert response.status_code == status, response.text
                assert_limit_headers(response, 3, remaining)
            retry_after = assert_rate_limited(await send(http, member), 3)
            assert 1 <= retry_after <= 60
        # Someone else's allowance is untouched: another address, or for the user policy another user.
        async with client_from(app, CLIENT if policy == "user" else OTHER_CLIENT) as http:
            response = await send(http, other_member)
            assert response.status_code == status, response.text
            assert_limit_headers(response, 3, 2)


async def test_a_token_counts_per_user_and_an_invalid_one_per_address(sqlite: TestDatabase) -> None:
    async with limited_app(sqlite.url, rate_limit_anonymous="2/minute", rate_limit_user="5/minute") as app:
        member = await register(app)
        async with client_from(app, CLIENT) as http:
            invalid = await http.get("/users/me", headers={"Authorization": "Bearer not-a-token"})
            assert_error(invalid, 401, "unauthorized")
            assert_limit_headers(invalid, 2, 1)
            valid = await http.get("/users/me", headers=member.headers)
            assert valid.status_code == 200
            assert_limit_headers(valid, 5, 4)
        # The user's allowance follows the user from address to address.
        async with client_from(app, OTHER_CLIENT) as http:
            assert_limit_headers(await http.get("/users/me", headers=member.headers), 5, 3)


async def test_a_policy_of_several_limits_answers_with_the_tightest(
    sqlite: TestDatabase, store: dict[str, object]
) -> None:
    async with (
        limited_app(sqlite.url, **store, rate_limit_anonymous="5/minute; 2/hour") as app,
        client_from(app, CLIENT) as http,
    ):
        assert_limit_headers(await http.get("/users/me"), 2, 1)
        assert_limit_headers(await http.get("/users/me"), 2, 0)
        retry_after = assert_rate_limited(await http.get("/users/me"), 2)
        assert retry_after > 60, "the hourly limit refused, so the wait is the hour's"


# --- Windows slide ---


async def test_the_window_slides(sqlite: TestDatabase, store: dict[str, object]) -> None:
    async with (
        limited_app(sqlite.url, **store, rate_limit_anonymous="3/4 seconds") as app,
        client_from(app, CLIENT) as http,
    ):
        started = time.monotonic()
        assert_limit_headers(await http.get("/users/me"), 3, 2)
        await asyncio.sleep(2)
        assert_limit_headers(await http.get("/users/me"), 3, 1)
        assert_limit_headers(await http.get("/users/me"), 3, 0)
        retry_after = assert_rate_limited(await http.get("/users/me"), 3)
        assert retry_after <= 3, "the first request leaves the window about two seconds from now"
        await asyncio.sleep(max(0.0, started + 4.3 - time.monotonic()))
        # The first request has left the window, the two later ones have not: one slot, not a fresh window
        # of three as a fixed window would give.
        assert_limit_headers(await http.get("/users/me"), 3, 0)
        assert_rate_limited(await http.get("/users/me"), 3)


# --- Usernames ---


async def test_failed_logins_lock_a_username_across_addresses_without_hashing(
    sqlite: TestDatabase, store: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with limited_app(sqlite.url, **store, rate_limit_login_user="3/minute") as app:
        member = await register(app)
        # Any spelling of the name counts against the same lower-cased username.
        for index, spelling in enumerate([member.username.upper(), member.username, member.username.title()]):
            async with client_from(app, f"203.0.113.{30 + index}") as http:
                assert_error(await login(http, spelling), 401, "invalid_credentials")
        hashes = count_hashes(app, monkeypatch)
        async with client_from(app, "203.0.113.40") as http:
            assert_rate_limited(await login(http, member.username, PASSWORD), 3)
        assert hashes() == 0, "a locked username must not cost a password hash"


async def test_a_successful_login_clears_the_username_count(
    sqlite: TestDatabase, store: dict[str, object]
) -> None:
    async with limited_app(
        sqlite.url, **store, rate_limit_login_user="3/minute", rate_limit_login_ip="100/minute"
    ) as app:
        member = await register(app)
        async with client_from(app, CLIENT) as http:
            for _ in range(2):
                assert_error(await login(http, member.username), 401, "invalid_credentials")
            assert (await login(http, member.username, PASSWORD)).status_code == 200
            for _ in range(3):
                assert_error(await login(http, member.username), 401, "invalid_credentials")
            assert_rate_limited(await login(http, member.username, PASSWORD), 3)


async def test_a_locked_username_answers_like_a_locked_address(
    sqlite: TestDatabase, store: dict[str, object]
) -> None:
    async with limited_app(
        sqlite.url, **store, rate_limit_login_ip="2/minute", rate_limit_login_user="2/minute"
    ) as app:
        async with client_from(app, CLIENT) as http:
            for _ in range(2):
                await login(http, unique_name("nobody"))
            address_locked = await login(http, unique_name("nobody"))
        victim = unique_name("victim")
        for address in ("203.0.113.51", "203.0.113.52"):
            async with client_from(app, address) as http:
                await login(http, victim)
        async with client_from(app, "203.0.113.53") as http:
            username_locked = await login(http, victim)
    for response in (address_locked, username_locked):
        assert_rate_limited(response, 2)
    assert header_names(address_locked) == header_names(username_locked)

    def without_request_id(response: httpx.Response) -> dict[str, Any]:
        error: dict[str, Any] = response.json()["error"]
        return {key: value for key, value in error.items() if key != "request_id"}

    assert without_request_id(address_locked) == without_request_id(username_locked)


# --- Never limited, and off ---


async def test_health_and_docs_are_never_limited(sqlite: TestDatabase) -> None:
    paths = ["/api/v1/health", "/api/v1/health/ready", "/openapi.json", "/api-docs"]
    paths.append("/api-docs/assets/swagger-ui.css")
    async with (
        limited_app(sqlite.url, rate_limit_anonymous="1/minute") as app,
        client_from(app, CLIENT) as http,
    ):
        for path in paths * 3:
            response = await http.get(f"http://testserver{path}")
            assert response.status_code == 200, (path, response.text)
            assert_no_limit_headers(response)
        # The allowance is still whole: none of the above counted.
        assert_limit_headers(await http.get("/users/me"), 1, 0)
        assert_rate_limited(await http.get("/users/me"), 1)


async def test_off_limits_nothing(sqlite: TestDatabase) -> None:
    tight = {f"rate_limit_{name}": "1/minute" for name in [*POLICY_REQUESTS, "login_user"]}
    async with limited_app(sqlite.url, **tight, rate_limits=False) as app:
        member = await register(app)
        async with client_from(app, CLIENT) as http:
            for _ in range(4):
                for send, status in POLICY_REQUESTS.values():
                    response = await send(http, member)
                    assert response.status_code == status, response.text
                    assert_no_limit_headers(response)
                assert_error(await login(http, member.username), 401, "invalid_credentials")
            assert (await login(http, member.username, PASSWORD)).status_code == 200


def test_limits_are_on_by_default_and_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOODNIGHT_RATE_LIMITS", raising=False)
    assert Settings().rate_limits is True
    monkeypatch.setenv("GOODNIGHT_RATE_LIMITS", "off")
    assert Settings().rate_limits is False


# --- Settings that cannot work stop the start-up ---


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GOODNIGHT_RATE_LIMIT_LOGIN_IP", "5/fortnight"),
        ("GOODNIGHT_RATE_LIMIT_LOGIN_USER", "ten per hour"),
        ("GOODNIGHT_RATE_LIMIT_SIGNUP", "5/minute;"),
        ("GOODNIGHT_RATE_LIMIT_ANONYMOUS", ""),
        ("GOODNIGHT_RATE_LIMIT_USER", "0/minute"),
        ("GOODNIGHT_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal"),
        ("GOODNIGHT_TRUSTED_PROXIES", "10.0.0.0/33"),
    ],
)
def test_a_bad_limit_or_proxy_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        Settings()


def test_limits_and_proxies_in_every_documented_form_are_accepted() -> None:
    settings = settings_for(
        "sqlite+aiosqlite://",
        rate_limit_login_ip="5/minute; 100/hour",
        rate_limit_login_user="10/15 minutes",
        trusted_proxies="10.0.0.0/8, 2001:db8::/32,127.0.0.1",
    )
    assert len(parse_networks(settings.trusted_proxy_list)) == 3


def test_serve_refuses_to_start_with_a_bad_limit(tmp_path: Path) -> None:
    env = clean_env(GOODNIGHT_RATE_LIMITS="on", GOODNIGHT_RATE_LIMIT_SIGNUP="lots")
    result = run_cli(["serve", "--port", "1"], cwd=tmp_path, env=env, timeout=30)
    assert result.returncode == 2, result
    assert "GOODNIGHT_RATE_LIMIT_SIGNUP" in result.stderr
    assert "'5/minute'" in result.stderr, "the message says what a limit looks like"


# --- Client addresses ---


def scope_from(peer: str | None, *forwarded_for: str) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded_for]
    return {"type": "http", "client": (peer, 1234) if peer else None, "headers": headers}


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded_for", "client"),
    [
        pytest.param("", "203.0.113.5", ["198.51.100.1"], "203.0.113.5", id="nobody-trusted"),
        pytest.param("10.0.0.0/8", "203.0.113.5", ["198.51.100.1"], "203.0.113.5", id="peer-not-a-proxy"),
        pytest.param("10.0.0.1", "10.0.0.1", ["198.51.100.1"], "198.51.100.1", id="one-proxy"),
        pytest.param("10.0.0.1", "10.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1", id="spoofed-left"),
        pytest.param("10.0.0.0/8", "10.0.0.1", ["198.51.100.1, 10.0.0.2"], "198.51.100.1", id="proxy-chain"),
        pytest.param(
            "10.0.0.0/8", "10.0.0.1", ["6.6.6.6", "198.51.100.1, 10.0.0.2"], "198.51.100.1", id="two-headers"
        ),
        pytest.param("10.0.0.1", "10.0.0.1", [], "10.0.0.1", id="no-header"),
        pytest.param("10.0.0.0/8", "10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3", id="all-ours"),
        pytest.param("10.0.0.0/8", "10.0.0.1", ["198.51.100.1, junk, 10.0.0.2"], "10.0.0.2", id="junk-hop"),
        pytest.param("10.0.0.1", "10.0.0.1", ["198.51.100.1:5555"], "198.51.100.1", id="with-port"),
        pytest.param("10.0.0.1", "10.0.0.1", ["[2001:db8::7]:443"], "2001:db8::7", id="ipv6-with-port"),
        pytest.param("10.0.0.1", "10.0.0.1", ["::ffff:198.51.100.1"], "198.51.100.1", id="ipv4-mapped"),
        pytest.param("10.0.0.1", "::ffff:10.0.0.1", ["198.51.100.1"], "198.51.100.1", id="mapped-peer"),
        pytest.param("2001:db8::/32", "2001:db8::1", ["198.51.100.1"], "198.51.100.1", id="ipv6-proxy"),
        pytest.param("10.0.0.1", None, ["198.51.100.1"], "unknown", id="no-peer"),
    ],
)
def test_the_client_address(trusted: str, peer: str | None, forwarded_for: list[str], client: str) -> None:
    networks = parse_networks(part for part in trusted.split(",") if part)
    assert ClientAddress(networks).of(scope_from(peer, *forwarded_for)) == client


async def test_forwarded_for_counts_only_from_a_trusted_proxy(sqlite: TestDatabase) -> None:
    async def statuses(app: FastAPI, *forwarded_for: str) -> list[int]:
        async with client_from(app, "127.0.0.1") as http:
            return [
                (await http.get("/users/me", headers={"X-Forwarded-For": value})).status_code
                for value in forwarded_for
            ]

    varied = [f"198.51.100.{n}" for n in range(1, 4)]
    async with limited_app(sqlite.url, rate_limit_anonymous="2/minute") as app:
        assert await statuses(app, *varied) == [401, 401, 429], "the header proves nothing from a mere peer"
    async with limited_app(sqlite.url, rate_limit_anonymous="2/minute", trusted_proxies="127.0.0.1") as app:
        assert await statuses(app, *varied) == [401, 401, 401], "each client behind the proxy counts alone"
        spoofed = [f"{address}, 198.51.100.9" for address in varied]
        assert await statuses(app, *spoofed) == [401, 401, 429], "what the client wrote changes nothing"


# --- Redis ---


async def test_one_round_trip_writes_what_the_limits_strategy_reads(redis_server: RedisServer) -> None:
    client = Redis.from_url(flushed(redis_server).url)
    await client.script_flush()  # the first hit has to load the scripts itself
    windows = RedisWindows(client)
    item, identifiers = parse("3/minute"), ("policy", "key")
    try:
        for remaining in (2, 1, 0):
            verdict = await windows.hit([item], identifiers)
            stats = await windows.strategy.get_window_stats(item, *identifiers)
            headers = verdict.header_dict()
            assert verdict.allowed
            assert int(headers["ratelimit-remaining"]) == stats.remaining == remaining
            assert abs(int(headers["ratelimit-reset"]) - math.ceil(stats.reset_time - time.time())) <= 1
        assert not (await windows.hit([item], identifiers)).allowed
        assert not await windows.strategy.test(item, *identifiers)
        assert await client.keys(f"{KEY_PREFIX}:*") != []
        await windows.clear([item], identifiers)
        assert await windows.strategy.test(item, *identifiers)
    finally:
        await windows.close()


@pytest.mark.parametrize("topology", ["server", "cluster"])
async def test_processes_on_one_redis_share_their_counts(
    sqlite: TestDatabase, redis_server: RedisServer, request: pytest.FixtureRequest, topology: str
) -> None:
    if topology == "cluster":
        nodes: RedisClusterNodes = request.getfixturevalue("cluster")
        shared = redis_store(nodes.url, redis_cluster=True)
    else:
        shared = redis_store(flushed(redis_server).url)
    async with (
        limited_app(sqlite.url, **shared, rate_limit_anonymous="3/minute") as one,
        limited_app(sqlite.url, **shared, rate_limit_anonymous="3/minute") as two,
        client_from(one, CLIENT) as first,
        client_from(two, CLIENT) as second,
    ):
        assert (await first.get("/users/me")).status_code == 401
        assert (await second.get("/users/me")).status_code == 401
        assert (await first.get("/users/me")).status_code == 401
        assert_rate_limited(await second.get("/users/me"), 3)


async def test_redis_going_away_falls_back_to_memory_and_comes_back(sqlite: TestDatabase) -> None:
    server = RedisServer().start()
    try:
        async with limited_app(sqlite.url, **redis_store(server.url), rate_limit_anonymous="3/minute") as app:
            limiter = limiter_of(app)
            async with client_from(app, CLIENT) as http:
                for _ in range(3):
                    assert (await http.get("/users/me")).status_code == 401
                assert_rate_limited(await http.get("/users/me"), 3)
            server.stop()
            with app_logs() as records:
                # Counted in memory now: still limited, never a 5xx, and the headers still there.
                async with client_from(app, OTHER_CLIENT) as http:
                    for remaining in (2, 1, 0):
                        response = await http.get("/users/me")
                        assert response.status_code == 401, response.text
                        assert_limit_headers(response, 3, remaining)
                    assert_rate_limited(await http.get("/users/me"), 3)
                assert limiter.redis_failures >= 1
                assert limiter.memory_fallbacks >= 4
                server.start()
                await asyncio.sleep(1.2)  # the breaker's cool-down
                async with client_from(app, SETUP_CLIENT) as http:
                    assert_limit_headers(await http.get("/users/me"), 3, 2)
            messages = [record.getMessage() for record in records if record.name == "goodnight.ratelimit"]
            assert messages == [
                "rate limits counted in process memory: Redis failed (ConnectionError)",
                "rate limits counted in Redis again",
            ]
            with redis.Redis.from_url(server.url) as connection:
                assert connection.keys(f"{KEY_PREFIX}:*{SETUP_CLIENT}*"), "back on Redis"
            fallbacks = limiter.memory_fallbacks
            async with client_from(app, SETUP_CLIENT) as http:
                assert_limit_headers(await http.get("/users/me"), 3, 1)
            assert limiter.memory_fallbacks == fallbacks
    finally:
        server.close()


async def test_a_redis_that_stops_answering_costs_one_timeout_then_memory(sqlite: TestDatabase) -> None:
    server = RedisServer().start()
    assert server.process is not None
    try:
        async with limited_app(sqlite.url, **redis_store(server.url), rate_limit_anonymous="2/minute") as app:
            async with client_from(app, CLIENT) as http:
                assert_limit_headers(await http.get("/users/me"), 2, 1)
                server.process.send_signal(signal.SIGSTOP)  # connected, and silent
                try:
                    for _ in range(2):  # the first waits out the socket timeout, the next skips Redis
                        response = await http.get("/users/me")
                        assert response.status_code == 401, response.text
                    assert_limit_headers(response, 2, 0)  # two counted in memory, which began empty
                finally:
                    server.process.send_signal(signal.SIGCONT)
            assert limiter_of(app).redis_failures == 1
    finally:
        server.close()


async def test_an_unreachable_redis_from_the_start_limits_in_memory(sqlite: TestDatabase) -> None:
    server = RedisServer()  # never started: its port refuses connections
    try:
        async with limited_app(sqlite.url, **redis_store(server.url), rate_limit_anonymous="2/minute") as app:
            async with client_from(app, CLIENT) as http:
                for remaining in (1, 0):
                    assert_limit_headers(await http.get("/users/me"), 2, remaining)
                assert_rate_limited(await http.get("/users/me"), 2)
            assert limiter_of(app).redis_failures >= 1
    finally:
        server.close()


# --- Real servers with two workers ---


def statuses_on_new_connections(
    server_url: str, count: int, forwarded_for: Callable[[int], str]
) -> list[int]:
    """``count`` requests, each on a connection of its own, so the kernel spreads them over the workers."""
    return [
        httpx.get(
            f"{server_url}/users/me", headers={"X-Forwarded-For": forwarded_for(n)}, timeout=30
        ).status_code
        for n in range(count)
    ]


def test_two_workers_share_limits_through_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    workdir = tmp_path / "shared"
    workdir.mkdir()
    env = clean_env(
        GOODNIGHT_RATE_LIMITS="on",
        GOODNIGHT_REDIS_URL=flushed(redis_server).url,
        GOODNIGHT_RATE_LIMIT_ANONYMOUS="4/minute",
        GOODNIGHT_TRUSTED_PROXIES="127.0.0.1",
    )
    with serving(workdir, env, "--workers", "2") as server:
        behind_proxy = statuses_on_new_connections(server.api_url, 12, lambda _: "203.0.113.7")
        assert sorted(behind_proxy) == [401] * 4 + [429] * 8, behind_proxy
        # Another client behind the same trusted proxy has its own allowance.
        assert statuses_on_new_connections(server.api_url, 1, lambda _: "203.0.113.8") == [401]


def test_two_workers_without_redis_limit_each_process_and_ignore_forwarded_for(tmp_path: Path) -> None:
    workdir = tmp_path / "alone"
    workdir.mkdir()
    env = clean_env(GOODNIGHT_RATE_LIMITS="on", GOODNIGHT_RATE_LIMIT_ANONYMOUS="4/minute")
    with serving(workdir, env, "--workers", "2") as server:
        # Every request claims another address; from an untrusted peer that must change nothing.
        found = statuses_on_new_connections(server.api_url, 16, lambda n: f"198.51.100.{n + 1}")
    assert set(found) == {401, 429}, found
    assert 4 <= found.count(401) <= 8, f"each of the two processes admits at most 4: {found}"
