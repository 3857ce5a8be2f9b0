"""Overload: a login flood and twice the admitted load against a real server (docs/operations.md).

    scripts/uv run --frozen python bench/overload.py

Runs ``goodnight serve --workers 2`` the way production does (``GOODNIGHT_ENV=production``, default Argon2
cost, hash gate, in-flight cap and pool) on a fresh PostgreSQL database of its own, with rate limits off so
that the backpressure itself is measured, then:

(a) login flood: ``--flood`` logins at once, each on its own connection, while one signed-in client reads
    ``GET /users/me`` back to back. Status counts, the reader's p50/p99 against the same reads on the idle
    server, worker RSS before and at peak, and the most connections seen idle inside a transaction.
(b) twice saturation: the rate of ``GET /users/me`` (a token check and one indexed query) the server
    sustains is measured with 64 clients reading back to back; then reads arrive at twice that rate, open
    loop (each when it is due, whatever happened to the earlier ones), for ``--seconds``. Status counts,
    p50/p99 of admitted and of refused reads, counted from when each was due; then the clients vanish
    mid-request and a probe measures the time until the server answers 200 again. ``--caps 256,32,none``
    compares in-flight caps: one server each, all offered the rate the first one sets.

Prints a table (``--json`` also writes the figures). Everything it starts is stopped, and its database
dropped, when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import secrets
import shlex
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gnbench.http import Connection, HttpError, Pool, Response
from gnbench.infra import HarnessError, Postgres, Server
from gnbench.stats import summarize_ms

from goodnight.config import Settings

HOST = "127.0.0.1"
API = "/api/v1"
ME = f"{API}/users/me"
PASSWORD = "bench-overload-password"  # noqa: S105  (throwaway accounts in the run's own database)
DEFAULT_CAP = int(Settings.model_fields["max_requests_in_flight"].default)
NO_CAP = 1_000_000  # GOODNIGHT_MAX_REQUESTS_IN_FLIGHT that no load here comes near
# Clients reading back to back to find the rate a server sustains: well past the point where more clients
# add throughput on two cores, well below the in-flight cap.
SATURATING_CLIENTS = 64
IDLE_IN_TRANSACTION = """
    SELECT count(*), coalesce(max(extract(epoch FROM clock_timestamp() - state_change)), 0)
    FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'
"""


def caps(text: str) -> list[int | None]:
    return [None if part.strip() == "none" else int(part) for part in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/overload.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2, help="goodnight serve --workers (default 2).")
    parser.add_argument("--flood", type=int, default=200, help="Logins sent at once in (a) (default 200).")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of the load in (b) (default 10).")
    parser.add_argument("--only", choices=("flood", "saturation"), help="Run only (a) or only (b).")
    parser.add_argument(
        "--caps",
        type=caps,
        default=[DEFAULT_CAP],
        help="GOODNIGHT_MAX_REQUESTS_IN_FLIGHT of each server to compare, comma-separated, 'none' for no cap "
        f"(default {DEFAULT_CAP}). (a) runs on the first; (b) on each, at the rate the first one sets.",
    )
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    return parser.parse_args(argv)


# --- the server's processes ---------------------------------------------------------------------------------


def worker_pids(server: Server) -> list[int]:
    """The uvicorn workers: the server's children started with multiprocessing's spawn."""
    assert server.process is not None
    assert server.process.popen is not None
    leader, pids = server.process.popen.pid, []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == leader and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                pids.append(int(stat.parent.name))
    return sorted(pids)


def memory_mib(pid: int, field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak since the last reset), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise HarnessError(f"no {field} for process {pid}")


def reset_peak_memory(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from VmRSS


# --- clients ------------------------------------------------------------------------------------------------


def outcome(response: Response) -> str:
    """``200``, or ``503 overloaded``: the status and, for errors, the envelope's code."""
    if response.status < 400:
        return str(response.status)
    try:
        return f"{response.status} {response.json()['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status} (no envelope)"


class Outcomes:
    """Each request's outcome and latency, and the client-side failures (no answer at all)."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {}
        self.failures: Counter[str] = Counter()

    def add(self, response: Response, seconds: float | None = None) -> None:
        """Count ``response``, which took ``seconds`` (by default, from sending it to its last byte)."""
        latency = response.seconds if seconds is None else seconds
        self.latencies.setdefault(outcome(response), []).append(latency)

    def fail(self, error: HttpError) -> None:
        self.failures[type(error.__cause__).__name__ if error.__cause__ else "error"] += 1

    def counts(self) -> dict[str, int]:
        counted = {name: len(samples) for name, samples in sorted(self.latencies.items())}
        counted.update({f"no answer ({name})": count for name, count in self.failures.items()})
        return counted

    def summary(self) -> dict[str, Any]:
        return {
            "counts": self.counts(),
            "latency_ms": {name: summarize_ms(samples) for name, samples in sorted(self.latencies.items())},
        }


async def register_and_login(connection: Connection, username: str) -> str:
    body = {"username": username, "password": PASSWORD}
    created = await connection.request("POST", f"{API}/users", json_body=body)
    if created.status != 201:
        raise HarnessError(f"registering {username}: {created.status} {created.body[:200]!r}")
    login = await connection.request("POST", f"{API}/auth/login", json_body=body)
    if login.status != 200:
        raise HarnessError(f"logging in {username}: {login.status} {login.body[:200]!r}")
    return str(login.json()["token"])


async def idle_reads(connection: Connection, token: str, requests: int = 200) -> dict[str, Any]:
    outcomes = Outcomes()
    for _ in range(requests):
        outcomes.add(await connection.request("GET", ME, token=token))
    return outcomes.summary()


async def read_until(stop: asyncio.Event, connection: Connection, token: str, outcomes: Outcomes) -> None:
    """A signed-in client reading back to back until ``stop``."""
    while not stop.is_set():
        try:
            outcomes.add(await connection.request("GET", ME, token=token))
        except HttpError as exc:
            outcomes.fail(exc)


class IdleTransactions:
    """Samples pg_stat_activity for the run's connections parked inside a transaction."""

    def __init__(self, postgres: Postgres, database: str) -> None:
        self.postgres, self.database = postgres, database
        self.most, self.oldest_seconds, self.samples = 0, 0.0, 0

    async def watch(self, stop: asyncio.Event) -> None:
        connection = await asyncpg.connect(
            host=self.postgres.host, port=self.postgres.port, user=self.postgres.user, database="postgres"
        )
        try:
            while not stop.is_set():
                count, oldest = await connection.fetchrow(IDLE_IN_TRANSACTION, self.database)
                self.most, self.samples = max(self.most, count), self.samples + 1
                self.oldest_seconds = max(self.oldest_seconds, float(oldest))
                await asyncio.sleep(0.02)
        finally:
            await connection.close()


# --- (a) the login flood ------------------------------------------------------------------------------------


async def login_flood(server: Server, postgres: Postgres, database: str, size: int) -> dict[str, Any]:
    reader = Connection(HOST, server.port)
    victim = Connection(HOST, server.port)
    token = await register_and_login(reader, "reader")
    await register_and_login(victim, "flooded")
    idle = await idle_reads(reader, token)

    workers = worker_pids(server)
    for pid in workers:
        reset_peak_memory(pid)
    rss_before = {pid: memory_mib(pid, "VmRSS") for pid in workers}
    stop, reads, logins = asyncio.Event(), Outcomes(), Outcomes()
    sampler = IdleTransactions(postgres, database)
    background = [
        asyncio.create_task(read_until(stop, reader, token, reads)),
        asyncio.create_task(sampler.watch(stop)),
    ]
    clients = [Connection(HOST, server.port, timeout=120) for _ in range(size)]
    body = {"username": "flooded", "password": PASSWORD}

    async def one_login(client: Connection) -> None:
        try:
            logins.add(await client.request("POST", f"{API}/auth/login", json_body=body))
        except HttpError as exc:
            logins.fail(exc)

    started = time.perf_counter()
    await asyncio.gather(*(one_login(client) for client in clients))
    flood_seconds = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*background)
    rss_peak = {pid: memory_mib(pid, "VmHWM") for pid in workers}
    await asyncio.gather(*(client.close() for client in [*clients, reader, victim]))
    return {
        "logins": size,
        "seconds": round(flood_seconds, 2),
        "login": logins.summary(),
        "reader_idle": idle,
        "reader_during": reads.summary(),
        "rss_mib_before": {str(pid): round(value, 1) for pid, value in rss_before.items()},
        "rss_mib_peak": {str(pid): round(value, 1) for pid, value in rss_peak.items()},
        "idle_in_transaction_max": sampler.most,
        "idle_in_transaction_oldest_s": round(sampler.oldest_seconds, 3),
        "idle_in_transaction_samples": sampler.samples,
    }


# --- (b) twice saturation -----------------------------------------------------------------------------------


RECOVERY_LIMIT_SECONDS = 60.0


def first_success(port: int, token: str, since: float) -> float:
    """Seconds from ``since`` until a fresh client's read is answered 200. Blocking, for a thread of its own:
    the harness's event loop is busy dropping thousands of connections meanwhile."""
    headers = {"Authorization": f"Bearer {token}"}
    while time.perf_counter() - since < RECOVERY_LIMIT_SECONDS:
        probe = http.client.HTTPConnection(HOST, port, timeout=RECOVERY_LIMIT_SECONDS)
        try:
            probe.request("GET", ME, headers=headers)
            if probe.getresponse().status == 200:
                return time.perf_counter() - since
        except OSError:
            pass  # refused or reset while the server is swamped: ask again
        finally:
            probe.close()
        time.sleep(0.01)
    raise HarnessError(f"no 200 within {RECOVERY_LIMIT_SECONDS:.0f}s of the load stopping")


async def closed_loop_rate(port: int, token: str, clients: int, seconds: float) -> float:
    """2xx answers per second with ``clients`` reading back to back: what the server sustains."""
    outcomes, stop = Outcomes(), asyncio.Event()
    connections = [Connection(HOST, port) for _ in range(clients)]
    tasks = [asyncio.create_task(read_until(stop, connection, token, outcomes)) for connection in connections]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    await asyncio.gather(*(connection.close() for connection in connections))
    return sum(len(samples) for name, samples in outcomes.latencies.items() if name.startswith("2")) / seconds


async def open_loop(port: int, token: str, rate: float, seconds: float) -> dict[str, Any]:
    """Reads sent at ``rate`` per second whatever happens to the earlier ones; latency counts from when a
    request was due. Then the clients vanish mid-request, as clients that time out do: the server is left
    with whatever it admitted, and a probe measures how long it takes to answer 200 again."""
    pool, outcomes = Pool(HOST, port, timeout=120), Outcomes()
    pending: set[asyncio.Task[None]] = set()

    async def read(due: float) -> None:
        try:
            outcomes.add(await pool.request("GET", ME, token=token), time.perf_counter() - due)
        except HttpError as exc:
            outcomes.fail(exc)

    started = time.perf_counter()
    for number in range(int(rate * seconds)):
        due = started + number / rate
        if (ahead := due - time.perf_counter()) > 0:
            await asyncio.sleep(ahead)
        task = asyncio.create_task(read(due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    outstanding, connections = len(pending), pool.size
    stopped = time.perf_counter()
    recovery = asyncio.create_task(asyncio.to_thread(first_success, port, token, stopped))
    for task in list(pending):
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await pool.close()
    return {
        "rate": round(rate, 1),
        "seconds": seconds,
        "connections": connections,
        "load": outcomes.summary(),
        "outstanding_at_stop": outstanding,
        "recovery_s": round(await recovery, 3),
    }


def app_view(log: Path, offset: int) -> dict[str, Any]:
    """The server's own view of the reads logged after ``offset``: the time each spent inside the app, by
    status. Unlike the clients' figures, it leaves out the queues in front of the app (the kernel's, the
    event loop's, and those of a load generator sharing the machine)."""
    seconds: dict[str, list[float]] = {}
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            if line.startswith(b"{") and b'"path":"' + ME.encode() + b'"' in line:
                entry = json.loads(line)
                seconds.setdefault(str(entry["status"]), []).append(entry["duration_ms"] / 1000)
    return {status: summarize_ms(samples) for status, samples in sorted(seconds.items())}


async def twice_saturation(server: Server, seconds: float, rate: float | None) -> dict[str, Any]:
    """The load at twice the rate the server sustains (measured here unless ``rate`` is given)."""
    setup = Connection(HOST, server.port)
    token = await register_and_login(setup, "crowd")
    idle = await idle_reads(setup, token)
    await setup.close()
    sustained = await closed_loop_rate(server.port, token, SATURATING_CLIENTS, 5.0)
    assert server.process is not None
    log, offset = server.process.log_path, server.process.log_path.stat().st_size
    result = await open_loop(server.port, token, rate or 2 * sustained, seconds)
    return {
        "idle": idle,
        "sustained_per_second": round(sustained, 1),
        **result,
        "in_app": app_view(log, offset),
    }


# --- the run ------------------------------------------------------------------------------------------------


def server_settings(database_url: str, **extra: str) -> dict[str, str]:
    return {
        "GOODNIGHT_DATABASE_URL": database_url,
        "GOODNIGHT_ENV": "production",
        "GOODNIGHT_JWT_SECRET": secrets.token_urlsafe(48),
        "GOODNIGHT_RATE_LIMITS": "off",
        **extra,
    }


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def server_name(cap: int | None) -> str:
    return "no cap" if cap is None else f"cap {cap}"


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    postgres = Postgres(args.pg_host, args.pg_port, args.pg_user)
    postgres.check()
    results: dict[str, Any] = {
        "workers": args.workers,
        "load_average_at_start": os.getloadavg(),
        "servers": {},
        "saturation": {},
        "server_error_lines": {},
    }
    rate = None  # (b) offers every server the rate the first one sets, so that they compare
    for number, cap in enumerate(args.caps):
        name, database = server_name(cap), f"gnbench_overload_{number}"
        extra = {"GOODNIGHT_MAX_REQUESTS_IN_FLIGHT": str(NO_CAP if cap is None else cap)}
        postgres.create(database)
        try:
            server = Server(
                f"server{number}", folder, args.workers, server_settings(postgres.url(database), **extra)
            )
            with running(server):
                results["servers"][name] = server.command
                if number == 0 and args.only != "saturation":
                    results["flood"] = run_async(login_flood(server, postgres, database, args.flood))
                if args.only != "flood":
                    saturation = run_async(twice_saturation(server, args.seconds, rate))
                    rate = saturation["rate"]
                    results["saturation"][name] = saturation
                results["server_error_lines"][name] = server.error_lines()
        finally:
            postgres.drop(database)
    results["load_average_at_end"] = os.getloadavg()
    return results


def run_async(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """uvloop when it is installed (it is, with uvicorn[standard]): less client overhead per request."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)


# --- the table ----------------------------------------------------------------------------------------------


def _ms(summary: dict[str, Any], key: str) -> str:
    value = summary.get(key)
    return "-" if value is None else f"{value:.1f}"


def _latency_rows(label: str, latencies: dict[str, dict[str, Any]], counts: dict[str, int]) -> list[str]:
    rows = []
    for name, count in counts.items():
        summary = latencies.get(name, {})
        rows.append(
            f"  {label:<22} {name:<28} {count:>7}  p50 {_ms(summary, 'p50'):>8} ms  "
            f"p99 {_ms(summary, 'p99'):>8} ms  max {_ms(summary, 'max'):>8} ms"
        )
    return rows


def _flood_rows(flood: dict[str, Any]) -> list[str]:
    lines = ["", f"(a) login flood: {flood['logins']} logins at once, answered within {flood['seconds']} s"]
    lines += _latency_rows("logins", flood["login"]["latency_ms"], flood["login"]["counts"])
    for label, key in (("signed-in read, idle", "reader_idle"), ("signed-in read, flood", "reader_during")):
        lines += _latency_rows(label, flood[key]["latency_ms"], flood[key]["counts"])
    for pid, before in flood["rss_mib_before"].items():
        peak = flood["rss_mib_peak"][pid]
        lines.append(f"  worker {pid} RSS: {before:.0f} MiB before, {peak:.0f} MiB at peak")
    most, oldest = flood["idle_in_transaction_max"], flood["idle_in_transaction_oldest_s"]
    lines.append(
        f"  idle in transaction: at most {most} connection(s) at once, the longest for "
        f"{oldest * 1000:.0f} ms ({flood['idle_in_transaction_samples']} samples)"
    )
    return lines


def _saturation_rows(name: str, saturation: dict[str, Any]) -> list[str]:
    sustained, offered = saturation["sustained_per_second"], saturation["rate"]
    lines = [
        "",
        f"(b) {name}: sustains {sustained:.0f} reads/s ({SATURATING_CLIENTS} clients back to back); "
        f"offered {offered:.0f} reads/s for {saturation['seconds']:g} s over {saturation['connections']} "
        "connections",
    ]
    for label, key in (("read, idle", "idle"), ("read, overloaded", "load")):
        lines += _latency_rows(label, saturation[key]["latency_ms"], saturation[key]["counts"])
    in_app = saturation["in_app"]
    lines += _latency_rows(
        "time inside the app", in_app, {status: in_app[status]["count"] for status in in_app}
    )
    unanswered, recovery = saturation["outstanding_at_stop"], saturation["recovery_s"]
    lines.append(
        f"  {unanswered} reads unanswered when the clients vanished; "
        f"the first 200 after that came in {recovery * 1000:.0f} ms"
    )
    return lines


def table(results: dict[str, Any]) -> str:
    start, end = (_load(results[f"load_average_at_{at}"]) for at in ("start", "end"))
    lines = [f"workers {results['workers']}; load average {start} at the start, {end} at the end"]
    if "flood" in results:
        lines += _flood_rows(results["flood"])
    for name, saturation in results["saturation"].items():
        lines += _saturation_rows(name, saturation)
    lines.append("")
    lines.append(f"server log lines at level error: {results['server_error_lines']}")
    for name, command in results["servers"].items():
        lines.append(f"{name}: {command}")
    return "\n".join(lines)


def _load(average: tuple[float, float, float]) -> str:
    return " ".join(f"{value:.1f}" for value in average)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="gnbench-overload-") as folder:
            results = run(args, Path(folder))
    except HarnessError as exc:
        print(f"bench/overload.py: {exc}", file=sys.stderr)
        return 2
    results["command"] = shlex.join([".venv/bin/python", "bench/overload.py", *sys.argv[1:]])
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
