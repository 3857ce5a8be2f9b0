"""What the harness measures with its own client: clock-out latency, fanout lag, the mixed workload.

Reads at full speed are wrk's job (see gnbench.wrk). These workloads either need state between requests
(clock in, then clock out; write, then poll until visible) or a fixed request rate, which wrk cannot do.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gnbench.http import HttpError, Pool, Response
from gnbench.stats import summarize_ms

API = "/api/v1"
FEED = f"{API}/sleep_records/followings"
CLOCK_IN = f"{API}/sleep_records/clock_in"
CLOCK_OUT = f"{API}/sleep_records/clock_out"
OWN = f"{API}/sleep_records"
# The fanout-lag probe's record starts this long ago: far longer than any seeded night (at most 10 h), so
# it is the first item of every feed it reaches, and still inside the feed's 7-day window.
PROBE_BACKDATE = timedelta(days=6)


class WorkloadError(RuntimeError):
    """The service answered something the harness cannot work with."""


def _code(response: Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def login(pool: Pool, username: str, password: str) -> str:
    response = await pool.request(
        "POST", f"{API}/auth/login", json_body={"username": username, "password": password}
    )
    if response.status != 200:
        raise WorkloadError(f"login as {username} failed: {response.status} {response.body[:200]!r}")
    return str(response.json()["token"])


async def login_all(pool: Pool, usernames: list[str], password: str, parallel: int = 2) -> dict[str, str]:
    """Tokens for many users; a couple at a time, since each login is one deliberately slow Argon2 check."""
    gate = asyncio.Semaphore(parallel)

    async def one(name: str) -> tuple[str, str]:
        async with gate:
            return name, await login(pool, name, password)

    return dict(await asyncio.gather(*(one(name) for name in dict.fromkeys(usernames))))


async def feed_cursor(pool: Pool, token: str, page: int, per_page: int = 10) -> tuple[str | None, int]:
    """The cursor that asks for feed page ``page`` (1-based), walking there one page at a time.

    Returns (cursor, page reached): a feed shorter than ``page`` pages gives its last page's cursor.
    """
    cursor: str | None = None
    reached = 1
    for number in range(2, page + 1):
        path = f"{FEED}?per_page={per_page}" + (f"&cursor={cursor}" if cursor else "")
        response = await pool.request("GET", path, token=token)
        if response.status != 200:
            raise WorkloadError(f"feed page {number - 1}: {response.status} {response.body[:200]!r}")
        following = response.json()["pagination"]["next_cursor"]
        if not following:
            break
        cursor, reached = following, number
    return cursor, reached


async def feed_length(pool: Pool, token: str, limit_pages: int = 1000) -> int:
    """How many items the whole feed holds (walks it with the largest page size)."""
    cursor: str | None = None
    total = 0
    for _ in range(limit_pages):
        path = f"{FEED}?per_page=100" + (f"&cursor={cursor}" if cursor else "")
        response = await pool.request("GET", path, token=token)
        if response.status != 200:
            raise WorkloadError(f"feed: {response.status} {response.body[:200]!r}")
        body = response.json()
        total += len(body["data"])
        cursor = body["pagination"]["next_cursor"]
        if not cursor:
            break
    return total


async def ensure_awake(pool: Pool, token: str) -> None:
    """Close the user's open record, if any, so the next clock-in is accepted."""
    response = await pool.request("POST", CLOCK_OUT, token=token)
    if response.status != 200 and _code(response) != "not_clocked_in":
        raise WorkloadError(f"clock-out: {response.status} {response.body[:200]!r}")


async def delete_recent(pool: Pool, token: str, since: datetime) -> int:
    """Delete the user's own records that began after ``since`` (newest first); returns how many."""
    doomed: list[str] = []
    cursor: str | None = None
    while True:
        path = f"{OWN}?limit=100" + (f"&cursor={cursor}" if cursor else "")
        response = await pool.request("GET", path, token=token)
        if response.status != 200:
            raise WorkloadError(f"own records: {response.status} {response.body[:200]!r}")
        body = response.json()
        older = False
        for item in body["data"]:
            if datetime.fromisoformat(item["clocked_in_at"].replace("Z", "+00:00")) >= since:
                doomed.append(item["id"])
            else:
                older = True
        cursor = body["pagination"]["next_cursor"]
        if older or not cursor:
            break
    for record_id in doomed:
        response = await pool.request("DELETE", f"{OWN}/{record_id}", token=token)
        if response.status != 204:
            raise WorkloadError(f"delete {record_id}: {response.status} {response.body[:200]!r}")
    return len(doomed)


async def warm_up(
    pool: Pool, paths: list[tuple[str, str | None]], rounds: int, connections: int = 16
) -> None:
    """Requests on every path, ``connections`` at a time: imports, pools, caches and first-use code paths
    all warmed, in every worker process. Sequential requests would travel on one kept-alive connection,
    which one worker accepted; the others would pay their first-use costs in the first measured run."""
    for _ in range(rounds):
        for path, token in paths:
            await asyncio.gather(*(pool.request("GET", path, token=token) for _ in range(connections)))


async def sequential(pool: Pool, path: str, token: str | None, requests: int) -> dict[str, Any]:
    """Time ``requests`` GETs one after another: the latency of one request with nothing else running."""
    samples: list[float] = []
    errors = 0
    for _ in range(requests):
        try:
            answer = await pool.request("GET", path, token=token)
        except HttpError:
            errors += 1
            continue
        if answer.status != 200:
            errors += 1
            continue
        samples.append(answer.seconds)
    return {"latency_ms": summarize_ms(samples), "errors": errors}


async def clock_out_latency(
    pool: Pool, tokens: dict[str, str], iterations: int, pause: float = 0.02
) -> dict[str, Any]:
    """Clock in, then time the clock-out; the users take turns, so they share the machine's noise."""
    samples: dict[str, list[float]] = {label: [] for label in tokens}
    errors: dict[str, int] = dict.fromkeys(tokens, 0)
    for token in tokens.values():
        await ensure_awake(pool, token)
    for _ in range(iterations):
        for label, token in tokens.items():
            answer = await pool.request("POST", CLOCK_IN, token=token)
            if answer.status != 201:
                errors[label] += 1
                await ensure_awake(pool, token)
                continue
            answer = await pool.request("POST", CLOCK_OUT, token=token)
            if answer.status != 200:
                errors[label] += 1
                continue
            samples[label].append(answer.seconds)
            await asyncio.sleep(pause)
    return {label: {"latency_ms": summarize_ms(samples[label]), "errors": errors[label]} for label in tokens}


@dataclass
class LagProbe:
    """Clock-out by an author, then poll a follower's first feed item until that record is it.

    The record is back-dated by six days, so it is longer than anything else in the feed and becomes
    its first item once it is visible. Before each probe the previous probe's record is deleted, so the
    next clock-in does not overlap it. Lag is measured from the clock-out's response (the write is
    committed) to the first poll that sees the record; ``from_request`` also counts the clock-out itself.
    """

    pool: Pool
    author_token: str
    reader_token: str
    poll_interval: float = 0.01
    timeout: float = 10.0
    lags: list[float] = field(default_factory=list)
    from_request: list[float] = field(default_factory=list)
    polls: int = 0
    timeouts: int = 0
    errors: int = 0
    _previous: str | None = None

    async def prepare(self) -> int:
        await ensure_awake(self.pool, self.author_token)
        return await delete_recent(self.pool, self.author_token, datetime.now(UTC) - timedelta(days=8))

    async def once(self) -> None:
        pool = self.pool
        if self._previous is not None:
            answer = await pool.request("DELETE", f"{OWN}/{self._previous}", token=self.author_token)
            self._previous = None
            if answer.status != 204:
                self.errors += 1
        at = _iso(datetime.now(UTC) - PROBE_BACKDATE)
        answer = await pool.request(
            "POST", CLOCK_IN, token=self.author_token, json_body={"clocked_in_at": at}
        )
        if answer.status != 201:
            self.errors += 1
            await ensure_awake(pool, self.author_token)
            return
        requested = time.perf_counter()
        answer = await pool.request("POST", CLOCK_OUT, token=self.author_token)
        committed = time.perf_counter()
        if answer.status != 200:
            self.errors += 1
            return
        record_id = answer.json()["sleep_record"]["id"]
        self._previous = record_id
        while True:
            answer = await pool.request("GET", f"{FEED}?per_page=1", token=self.reader_token)
            self.polls += 1
            if answer.status != 200:
                self.errors += 1
            else:
                data = answer.json()["data"]
                if data and data[0]["id"] == record_id:
                    seen = time.perf_counter()
                    self.lags.append(seen - committed)
                    self.from_request.append(seen - requested)
                    return
            if time.perf_counter() - committed > self.timeout:
                self.timeouts += 1
                return
            await asyncio.sleep(self.poll_interval)

    async def run(
        self, samples: int | None = None, stop: asyncio.Event | None = None, gap: float = 0.1
    ) -> None:
        count = 0
        while (samples is None or count < samples) and (stop is None or not stop.is_set()):
            try:
                await self.once()
            except HttpError:
                self.errors += 1
            count += 1
            await asyncio.sleep(gap)

    async def cleanup(self) -> None:
        """Delete the last probe's record, so another probe (or a rerun) can back-date again."""
        if self._previous is not None:
            with contextlib.suppress(HttpError):
                await self.pool.request("DELETE", f"{OWN}/{self._previous}", token=self.author_token)
            self._previous = None

    def result(self) -> dict[str, Any]:
        return {
            "lag_ms": summarize_ms(self.lags),
            "lag_from_request_ms": summarize_ms(self.from_request),
            "samples": len(self.lags),
            "polls": self.polls,
            "poll_interval_ms": self.poll_interval * 1000,
            "timeouts": self.timeouts,
            "errors": self.errors,
        }


@dataclass
class Writer:
    token: str
    open: bool = False
    busy: bool = False


@dataclass
class MixedResult:
    latency: list[float] = field(default_factory=list)  # from the scheduled start (no coordinated omission)
    service: list[float] = field(default_factory=list)  # from the request being sent
    reads: list[float] = field(default_factory=list)
    writes: list[float] = field(default_factory=list)
    slip: list[float] = field(default_factory=list)  # how late the generator sent each request
    errors: dict[str, int] = field(default_factory=dict)
    skipped_writes: int = 0
    first: float = 0.0
    last: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _toggle(pool: Pool, writer: Writer) -> Response:
    """The writer's next write: clock in, or clock out when asleep. ``writer.open`` follows the server,
    including after a refusal that shows the harness had it wrong."""
    answer = await pool.request("POST", CLOCK_OUT if writer.open else CLOCK_IN, token=writer.token)
    if answer.status in (200, 201):
        writer.open = not writer.open
    elif (code := _code(answer)) in ("already_clocked_in", "not_clocked_in"):
        writer.open = code == "already_clocked_in"
    return answer


async def _awake(host: str, port: int, writers: list[Writer]) -> None:
    pool = Pool(host, port)
    for writer in writers:  # nobody asleep: every writer starts (and leaves) clocked out
        await ensure_awake(pool, writer.token)
        writer.open = writer.busy = False
    await pool.close()


@dataclass
class Mix:
    """The mixed workload's server, who reads and who writes, and in what proportion."""

    host: str
    port: int
    readers: list[str]  # tokens
    writers: list[Writer]
    reads_per_write: int = 10
    seed: int = 1


async def mixed_capacity(mix: Mix, *, seconds: float = 5.0, clients: int = 32) -> float:
    """The rate (requests/s) the server sustains for the mix: ``clients`` closed-loop clients, each sending
    its next request when the last is answered, for ``seconds``. The open-loop run targets a share of it,
    so it measures the service at a known load rather than a queue growing without bound."""
    host, port, readers, writers = mix.host, mix.port, mix.readers, mix.writers
    await _awake(host, port, writers)
    pool = Pool(host, port)
    rng = random.Random(mix.seed)  # noqa: S311  (a reproducible mix, not a secret)
    every = mix.reads_per_write + 1
    counts = {"issued": 0, "answered": 0}
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            counts["issued"] += 1
            idle = [writer for writer in writers if not writer.busy]
            try:
                if counts["issued"] % every == 0 and idle:
                    idle[0].busy = True
                    try:
                        await _toggle(pool, idle[0])
                    finally:
                        idle[0].busy = False
                else:
                    await pool.request("GET", FEED, token=rng.choice(readers))
            except HttpError:
                continue
            counts["answered"] += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    await pool.close()
    await _awake(host, port, writers)
    return counts["answered"] / elapsed


async def mixed(
    mix: Mix, *, rate: float, duration: float, max_in_flight: int = 256, grace: float = 15.0
) -> dict[str, Any]:
    """An open-loop generator: request i is due at start + i / rate, whatever happened to earlier ones.

    Every (mix.reads_per_write + 1)-th request is a write: the next idle writer clocks in or out, in turn;
    the others read page 1 of a random reader's feed. Latency counts from when a request was due, so a
    server that falls behind shows it (no coordinated omission). Requests still unanswered ``grace``
    seconds after the last one was due are cancelled and counted as errors ("unfinished").
    """
    host, port, readers, writers = mix.host, mix.port, mix.readers, mix.writers
    reads_per_write = mix.reads_per_write
    await _awake(host, port, writers)
    pool = Pool(host, port)
    rng = random.Random(mix.seed)  # noqa: S311  (a reproducible mix, not a secret)
    clock = time.perf_counter  # uvloop's loop.time() only has millisecond resolution
    out = MixedResult()
    gate = asyncio.Semaphore(max_in_flight)
    total = int(rate * duration)
    every = reads_per_write + 1
    next_writer = 0
    counts = {"reads": 0, "writes": 0}

    async def timed(kind: str, due: float, send: Callable[[], Awaitable[Response]], ok: set[int]) -> None:
        """Send one request of ``kind`` ("reads" or "writes") and record when it went and came back."""
        async with gate:
            sent = clock()
            out.slip.append(sent - due)
            try:
                answer = await send()
            except HttpError:
                out.error("transport")
                return
            finished = clock()
            counts[kind] += 1
            out.last = max(out.last, finished)
            if answer.status not in ok:
                out.error(f"{kind[:-1]}_{answer.status if kind == 'reads' else _code(answer)}")
                return
            out.latency.append(finished - due)
            out.service.append(finished - sent)
            getattr(out, kind).append(finished - due)

    async def read(token: str, due: float) -> None:
        await timed("reads", due, lambda: pool.request("GET", FEED, token=token), {200})

    async def write(writer: Writer, due: float) -> None:
        try:
            await timed("writes", due, lambda: _toggle(pool, writer), {200, 201})
        finally:
            writer.busy = False

    tasks: set[asyncio.Task[None]] = set()
    start = clock() + 0.05
    out.first = start
    for index in range(total):
        due = start + index / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        job = None
        if index % every == every - 1 and writers:
            for step in range(len(writers)):
                candidate = writers[(next_writer + step) % len(writers)]
                if not candidate.busy:
                    candidate.busy = True
                    next_writer = (next_writer + step + 1) % len(writers)
                    job = write(candidate, due)
                    break
            else:
                out.skipped_writes += 1
        if job is None:
            job = read(rng.choice(readers), due)
        task = asyncio.create_task(job)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=grace)
        for task in pending:
            task.cancel()
            out.error("unfinished")
        await asyncio.gather(*pending, return_exceptions=True)
    connections = pool.size
    await pool.close()
    await _awake(host, port, writers)  # leave nobody asleep for the next workload
    elapsed = max(out.last - out.first, 1e-9)
    completed = counts["reads"] + counts["writes"]
    return {
        "target_rps": rate,
        "duration_s": duration,
        "reads_per_write": reads_per_write,
        "scheduled": total,
        "completed": completed,
        "achieved_rps": round(completed / elapsed, 1),
        "reads": counts["reads"],
        "writes": counts["writes"],
        "skipped_writes": out.skipped_writes,
        "errors": out.errors,
        "error_total": sum(out.errors.values()),
        "latency_ms": summarize_ms(out.latency),
        "service_ms": summarize_ms(out.service),
        "read_latency_ms": summarize_ms(out.reads),
        "write_latency_ms": summarize_ms(out.writes),
        "generator_slip_ms": summarize_ms(out.slip),
        "connections": connections,
        "readers": len(readers),
        "writers": len(writers),
    }
