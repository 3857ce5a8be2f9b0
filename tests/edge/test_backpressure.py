"""Backpressure: overload is refused fast, in the envelope, with Retry-After; it never becomes a 500, a stuck
connection pool or a closed connection.

In-process on every backend: password hashing holds no database connection, the hash gate and the in-flight
cap refuse with 503 ``overloaded``, an exhausted pool is 503 ``service_unavailable``. Against real servers: a
login flood and an overload well past saturation, an unexpected error and a database outage on a kept-alive
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.pool import QueuePool

from goodnight.auth.passwords import Passwords
from goodnight.config import Settings
from goodnight.deps import Services
from goodnight.main import create_app
from tests.support.api import PASSWORD, Api, Member
from tests.support.apps import client_for, running
from tests.support.databases import TestDatabase, settings_for, truncate
from tests.support.envelope import assert_error
from tests.support.hashing import connections_held_while_hashing
from tests.support.load import IdleTransactions, memory_kib, reset_peak_memory, worker_pids
from tests.support.logs import app_logs, records_of
from tests.support.processes import Server, free_port, production_env, serving
from tests.support.raw_http import RawConnection

# A hash of about a tenth of a second with little memory: long enough that a second login always finds the
# gate taken, cheap enough to run many.
SLOW_HASH: dict[str, Any] = {"argon2_time_cost": 200, "argon2_memory_kib": 1024, "argon2_parallelism": 1}
HASH_GATE: dict[str, Any] = {"hash_concurrency": 1, "hash_wait_seconds": 0.02, **SLOW_HASH}
PRODUCTION_ARGON2 = {
    f"GOODNIGHT_{name.upper()}": str(Settings.model_fields[name].default)
    for name in ("argon2_time_cost", "argon2_memory_kib", "argon2_parallelism")
}


def assert_refused(response: httpx.Response, code: str = "overloaded") -> None:
    """A 503 in the envelope that says when to come back."""
    assert_error(response, 503, code)
    assert int(response.headers["retry-after"]) >= 1, response.headers


def plain_text_tracebacks(log: str) -> list[str]:
    """Tracebacks printed outside our JSON lines (a JSON line carries its traceback inside the line)."""
    lines = log.splitlines()
    return [line for line in lines if "Traceback (most recent" in line and not line.startswith("{")]


@contextlib.asynccontextmanager
async def api_with(database: TestDatabase, **overrides: Any) -> AsyncIterator[tuple[Services, Api]]:
    """An app of its own on the test database, built with these settings, and a client for it."""
    async with running(settings_for(database.url, **overrides)) as app:
        services: Services = app.state.services
        await truncate(services.database.engine)
        async with client_for(app) as http:
            yield services, Api(http)


async def login(api: Api, who: Member) -> httpx.Response:
    return await api.client.post("/auth/login", json={"username": who.username, "password": PASSWORD})


# --- password hashing ---------------------------------------------------------------------------------------


async def test_password_hashing_holds_no_database_connection(
    api: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = services.database.engine.pool
    assert isinstance(pool, QueuePool)
    checked_out = connections_held_while_hashing(monkeypatch, pool)
    alice = await api.register()  # a registration, then a login
    for username in (alice.username, "nobody"):  # a wrong password, an unknown user
        failed = await api.client.post("/auth/login", json={"username": username, "password": "x" * 8})
        assert_error(failed, 401, "invalid_credentials")
    assert checked_out == [0, 0, 0, 0]


async def test_logins_beyond_the_hash_gate_get_503_overloaded(database: TestDatabase) -> None:
    async with api_with(database, **HASH_GATE) as (_, api):
        alice = await api.register()
        responses = await asyncio.gather(*(login(api, alice) for _ in range(6)))
        statuses = Counter(response.status_code for response in responses)
        assert set(statuses) == {200, 503}, statuses
        for response in responses:
            if response.status_code == 503:
                assert_refused(response)
        assert (await login(api, alice)).status_code == 200  # the gate is free again


async def test_a_login_finding_the_hash_queue_full_is_refused_at_once(database: TestDatabase) -> None:
    # A wait far longer than the test, so a login refused here was refused for the queue, not the wait.
    async with api_with(database, **{**HASH_GATE, "hash_wait_seconds": 60}) as (services, api):
        alice = await api.register()
        # As if hashes took 6 s here: the slot gets through ten within the wait, so ten may queue.
        services.passwords.hash_time.seconds = 6.0
        responses = await asyncio.gather(*(login(api, alice) for _ in range(25)))
        statuses = Counter(response.status_code for response in responses)
        assert statuses[503] >= 1, statuses
        # Whoever was refused found one hashing and a full queue, and those all got in.
        assert statuses[200] >= 11, statuses
        for response in responses:
            if response.status_code == 503:
                assert_refused(response)


async def test_a_busy_event_loop_does_not_count_as_hashing_time(database: TestDatabase) -> None:
    """The queue's capacity is judged on how long hashes take; a loop too busy to pick up a finished hash
    at once must not make hashes look slow, or logins would be refused as if the queue were full."""
    passwords = Passwords(settings_for(database.url))  # the tests' hashes take well under a millisecond
    async with passwords.slot() as slot:
        hashing = asyncio.ensure_future(slot.hash(PASSWORD))
        await asyncio.sleep(0)  # the hash is handed to its thread
        time.sleep(0.5)  # the loop is busy elsewhere meanwhile  # noqa: ASYNC251
        await hashing
    # Timed from the loop, the half second would weigh 0.1 s in the running estimate.
    assert passwords.hash_time.seconds < 0.05, passwords.hash_time


async def test_a_registration_refused_at_the_hash_gate_writes_nothing(database: TestDatabase) -> None:
    async with api_with(database, **HASH_GATE) as (_, api):
        names = [f"sleeper{number}" for number in range(6)]
        responses = await asyncio.gather(
            *(api.client.post("/users", json={"username": name, "password": PASSWORD}) for name in names)
        )
        answers = dict(zip(names, responses, strict=True))
        refused = [name for name, response in answers.items() if response.status_code == 503]
        assert refused, [response.status_code for response in responses]
        assert len(refused) < len(names)
        for name, response in answers.items():
            if name in refused:
                assert_refused(response)
            else:
                assert response.status_code == 201, response.text
        for name in refused:  # the name is still free: nothing was written
            again = await api.client.post("/users", json={"username": name, "password": PASSWORD})
            assert again.status_code == 201, again.text


# --- the connection pool ------------------------------------------------------------------------------------

POOL_SIZE = 1
HELD_CONNECTIONS = 2 * POOL_SIZE  # the pool, plus as many again as overflow


# SQLite has no pool to exhaust: a file database takes any number of connections.
@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
async def test_an_exhausted_pool_is_503_service_unavailable(database: TestDatabase) -> None:
    # The timeout also bounds opening a connection: a second, not less, so a loaded machine's slow accept
    # is not mistaken for the exhausted pool this test is about.
    pool_settings = {"database_pool_size": POOL_SIZE, "database_pool_timeout_seconds": 1.0}
    async with api_with(database, **pool_settings) as (services, api):
        alice = await api.register()
        async with contextlib.AsyncExitStack() as held:
            for _ in range(HELD_CONNECTIONS):
                await held.enter_async_context(services.database.engine.connect())
            started = time.monotonic()
            refused = await api.client.get("/users/me", headers=alice.headers)
            assert_refused(refused, "service_unavailable")
            assert time.monotonic() - started < 10, "the wait for a connection must be bounded"
        assert (await api.client.get("/users/me", headers=alice.headers)).status_code == 200


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that completes TCP handshakes and never says a word: a database behind a route that drops
    packets, which no refused connection reveals."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port: int = listener.getsockname()[1]
        yield port


async def test_a_database_that_never_answers_is_503_within_the_connect_timeout() -> None:
    with silent_listener() as port:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/goodnight"
        async with (
            running(settings_for(url, database_pool_timeout_seconds=0.5)) as app,
            client_for(app) as http,
        ):
            started = time.monotonic()
            refused = await http.post("/users", json={"username": "alice", "password": PASSWORD})
            assert_refused(refused, "service_unavailable")
            # Without a connect timeout asyncpg waits 60 s for the server's first word.
            assert time.monotonic() - started < 20, "opening a connection must be bounded"


# --- the in-flight cap --------------------------------------------------------------------------------------


def app_with_route(tmp_path: Path, path: str, endpoint: Any, **overrides: Any) -> FastAPI:
    """The real app plus one route only this test has, on an empty SQLite file (the route needs no tables)."""
    app = create_app(settings_for(f"sqlite+aiosqlite:///{tmp_path / 'goodnight.db'}", **overrides))
    app.add_api_route(f"/api/v1{path}", endpoint)
    return app


async def test_requests_beyond_the_in_flight_cap_are_refused_at_once(tmp_path: Path) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def park() -> dict[str, str]:
        entered.set()
        await release.wait()
        return {"status": "done"}

    app = app_with_route(tmp_path, "/test/park", park, max_requests_in_flight=1)
    async with app.router.lifespan_context(app), client_for(app) as http:
        parked = asyncio.create_task(http.get("/test/park"))
        await asyncio.wait_for(entered.wait(), timeout=30)
        # Refused before any work: not even authentication ran (it would have said 401).
        with app_logs() as records:
            refused = await http.get("/users/me")
        assert_refused(refused)
        assert refused.headers["retry-after"] == "1"
        (logged,) = records_of(records, refused.headers["x-request-id"])
        assert logged.__dict__["status"] == 503
        assert_refused(await http.post("/auth/login", json={"username": "a", "password": "b"}))
        for probe in ("/health", "/health/ready", "http://testserver/metrics"):
            assert (await http.get(probe)).status_code == 200, probe
        release.set()
        assert (await parked).status_code == 200
        assert_error(await http.get("/users/me"), 401, "unauthorized")


# --- unexpected errors and the connection ---------------------------------------------------------------


@contextlib.contextmanager
def uvicorn_serving(app: FastAPI) -> Iterator[int]:
    """``app`` behind a real uvicorn on a free port, in a thread of this process; yields the port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_an_unexpected_error_is_answered_and_the_connection_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def fail() -> None:
        raise RuntimeError("internal detail 42")

    app = app_with_route(tmp_path, "/test/fail", fail)
    with (
        app_logs() as records,
        uvicorn_serving(app) as port,
        RawConnection(port) as connection,
    ):
        failed = connection.request("GET", "/api/v1/test/fail")
        error = assert_error(failed, 500, "internal_error")
        assert "internal detail" not in failed.text
        assert connection.request("GET", "/api/v1/health").status_code == 200
        # Bodies over the limit, refused up front (Content-Length) or while streaming in (chunked): the
        # connection still serves the next request.
        for body in ({"body": b" " * 100_000}, {"chunks": [b" " * 16384] * 5}):
            too_large = connection.request("POST", "/api/v1/auth/login", **body)
            assert_error(too_large, 413, "payload_too_large")
            assert connection.request("GET", "/api/v1/health").status_code == 200
    (record,) = records_of(records, error["request_id"])
    assert record.exc_info is not None
    uvicorn_errors = [record.getMessage() for record in caplog.records if record.name.startswith("uvicorn")]
    assert not [message for message in uvicorn_errors if "Exception in ASGI application" in message]


def test_a_database_outage_is_503_on_a_kept_alive_connection(tmp_path: Path) -> None:
    unreachable = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/goodnight"
    env = production_env(GOODNIGHT_DATABASE_URL=unreachable)
    with serving(tmp_path, env, "--no-migrate") as server, RawConnection(server.port) as connection:
        refused = connection.request(
            "POST", "/api/v1/auth/login", body=b'{"username":"alice","password":"sleepwell1"}'
        )
        error = assert_error(refused, 503, "service_unavailable")
        assert int(refused.headers["retry-after"]) >= 1
        assert connection.request("GET", "/api/v1/health").status_code == 200
    log = server.log()
    assert not plain_text_tracebacks(log)
    assert "Exception in ASGI application" not in log
    logged = [json.loads(line) for line in log.splitlines() if error["request_id"] in line]
    assert [line["status"] for line in logged if "status" in line] == [503]


# --- real servers under load --------------------------------------------------------------------------------


async def read_until(stop: asyncio.Event, http: httpx.AsyncClient, who: Member) -> list[int]:
    """A signed-in reader, one request after another until ``stop``: the statuses it got."""
    statuses = []
    while not stop.is_set():
        statuses.append((await http.get("/users/me", headers=who.headers)).status_code)
        await asyncio.sleep(0.05)
    return statuses


FLOOD = 200
# Fixed rather than the CPU count, so the memory bound below is the same on every machine.
FLOOD_HASHES = 2
ARGON2_MEMORY_KIB = int(PRODUCTION_ARGON2["GOODNIGHT_ARGON2_MEMORY_KIB"])
# Each running hash holds its Argon2 memory; everything else a worker allocates for the flood is far less.
# Without the gate it would be one hash per login: 100 per worker, 6 GiB.
WORKER_GROWTH_BOUND_KIB = FLOOD_HASHES * ARGON2_MEMORY_KIB + 256 * 1024


def flood_client(server: Server, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=server.api_url, timeout=120.0, limits=limits)


async def test_a_login_flood_is_refused_with_503_overloaded_not_collapsed(
    tmp_path: Path, empty_postgres: TestDatabase
) -> None:
    env = production_env(
        GOODNIGHT_DATABASE_URL=empty_postgres.url,
        GOODNIGHT_HASH_CONCURRENCY=str(FLOOD_HASHES),
        **PRODUCTION_ARGON2,
    )
    idle = IdleTransactions(empty_postgres)
    try:
        with serving(tmp_path, env, "--workers", "2") as server:
            async with flood_client(server, 4) as http, flood_client(server, FLOOD) as flood:
                api = Api(http)
                alice, reader = await api.register("alice"), await api.register("reader")
                workers = worker_pids(server)
                assert len(workers) == 2, workers
                for pid in workers:
                    reset_peak_memory(pid)
                before = {pid: memory_kib(pid, "VmRSS") for pid in workers}
                stop = asyncio.Event()
                reads = asyncio.create_task(read_until(stop, http, reader))
                sampling = asyncio.create_task(idle.watch(stop))
                try:
                    logins = await asyncio.gather(*(login(Api(flood), alice) for _ in range(FLOOD)))
                finally:
                    stop.set()
                read_statuses, samples = await reads, await sampling
                peaks = {pid: memory_kib(pid, "VmHWM") for pid in workers}
                after = await idle.count()
    finally:
        await idle.close()

    statuses = Counter(response.status_code for response in logins)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] >= 1, statuses
    for response in logins:
        if response.status_code == 503:
            assert_refused(response)
    assert read_statuses, "the signed-in reader never got an answer"
    assert set(read_statuses) == {200}, Counter(read_statuses)
    assert samples
    assert max(parked for _, parked in samples) == 0, samples
    assert after == (0, 0)
    for pid in workers:
        assert peaks[pid] - before[pid] < WORKER_GROWTH_BOUND_KIB, (before, peaks)
    assert not plain_text_tracebacks(server.log())


OVERLOAD = 300
RECOVERY_SECONDS = 10.0


async def test_overload_past_saturation_is_refused_and_then_recovers(
    tmp_path: Path, empty_postgres: TestDatabase
) -> None:
    env = production_env(
        GOODNIGHT_DATABASE_URL=empty_postgres.url,
        GOODNIGHT_MAX_REQUESTS_IN_FLIGHT="4",
        GOODNIGHT_DATABASE_POOL_SIZE="1",
        GOODNIGHT_DATABASE_POOL_TIMEOUT_SECONDS="0.5",
        GOODNIGHT_HASH_CONCURRENCY="1",
    )
    with serving(tmp_path, env) as server:
        async with flood_client(server, 4) as http, flood_client(server, OVERLOAD) as crowd:
            alice = await Api(http).register("alice")
            # Reads and logins mixed: the cap, the pool and the hash gate all get their share.
            requests = [
                login(Api(crowd), alice) if number % 3 == 0 else crowd.get("/users/me", headers=alice.headers)
                for number in range(OVERLOAD)
            ]
            responses = await asyncio.gather(*requests)
            load_stopped = time.monotonic()
            while (await http.get("/users/me", headers=alice.headers)).status_code != 200:
                assert time.monotonic() - load_stopped < RECOVERY_SECONDS, "no recovery after the load"
                await asyncio.sleep(0.1)
            for _ in range(20):
                assert (await http.get("/users/me", headers=alice.headers)).status_code == 200
                assert (await login(Api(http), alice)).status_code == 200

    outcomes = Counter(
        (response.status_code, response.json()["error"]["code"] if response.is_error else None)
        for response in responses
    )
    assert {status for status, _ in outcomes} <= {200, 429, 503}, outcomes
    assert (503, "overloaded") in outcomes, outcomes
    for response in responses:
        if response.status_code == 503:
            assert_refused(response, response.json()["error"]["code"])
    assert {code for status, code in outcomes if status == 503} <= {"overloaded", "service_unavailable"}
    assert not plain_text_tracebacks(server.log())
