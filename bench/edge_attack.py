"""The HTTP edge under attack: worker memory and the latency of normal requests, before and during 500
slowloris connections and 50 never-ending 20 MB headers.

    scripts/uv run --frozen python bench/edge_attack.py
    scripts/uv run --frozen python bench/edge_attack.py --stock-uvicorn   # the same on uvicorn's own protocol

It starts its own ``goodnight serve --workers 2`` (production settings, rate limits off, SQLite in a temporary
folder unless ``--database-url`` names another database), signs one user up, and times sequential
``GET /api/v1/health`` and signed-in ``GET /api/v1/users/me`` requests on one keep-alive connection while the
server is idle. Then a separate process attacks: slowloris connections that send half a request head and
then one byte a second, and connections that send a header that never ends (up to 20 MB, then they hold
it). Any attacker the server drops connects again, so the attack stays at full strength. Once it has run
``--settle`` seconds (long enough for the server to drop every slowloris once) the same requests are timed
again. Worker memory is the sum of the workers' RSS from /proc, sampled through the whole attack.
``--stock-uvicorn`` serves the same app with uvicorn's stock httptools protocol, for the figures before the
edge was hardened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.synchronize
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gnbench.http import Connection
from gnbench.infra import HarnessError, Server, clean_environment, goodnight_executable
from gnbench.stats import summarize_ms

HOST = "127.0.0.1"
PASSWORD = secrets.token_urlsafe(16)
MIB = 1024 * 1024
SLOWLORIS_HEAD = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: "
ENDLESS_HEAD = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: "
ENDLESS_CHUNK = b"a" * (64 * 1024)


# --- the attack (runs in a process of its own, so it does not share the timing client's interpreter) ---


@dataclass
class AttackOptions:
    port: int
    slowloris: int
    endless_headers: int
    endless_header_bytes: int
    reconnect_delay: float


@dataclass
class AttackStats:
    slowloris_opened: int = 0
    slowloris_dropped: int = 0  # closed by the server while still trickling
    slowloris_lifetimes: list[float] = field(default_factory=list)
    endless_opened: int = 0
    endless_cut: int = 0  # closed by the server before the attack ended
    endless_seen_431: int = 0
    connect_failures: int = 0


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    received = b""
    with contextlib.suppress(OSError):
        while chunk := await reader.read(4096):
            received += chunk
    return received


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _slowloris(options: AttackOptions, stop: asyncio.Event, stats: AttackStats) -> None:
    """Half a request head, then one byte a second, for ever; reconnects when the server drops it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(HOST, options.port)
        except OSError:
            stats.connect_failures += 1
            await asyncio.sleep(1)
            continue
        stats.slowloris_opened += 1
        opened = time.monotonic()
        closed_by_server = asyncio.ensure_future(_read_until_closed(reader))
        with contextlib.suppress(OSError):
            writer.write(SLOWLORIS_HEAD)
            while not stop.is_set():
                await asyncio.wait([closed_by_server], timeout=1.0)
                if closed_by_server.done():
                    break
                writer.write(b"a")
        if closed_by_server.done():
            stats.slowloris_dropped += 1
            stats.slowloris_lifetimes.append(time.monotonic() - opened)
        closed_by_server.cancel()
        await _close(writer)


async def _endless_header(options: AttackOptions, stop: asyncio.Event, stats: AttackStats) -> None:
    """A header as fast as the server reads it, up to the byte budget, then held open; never ended."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(HOST, options.port)
        except OSError:
            stats.connect_failures += 1
            await asyncio.sleep(1)
            continue
        stats.endless_opened += 1
        answer = asyncio.ensure_future(_read_until_closed(reader))
        sent = 0
        with contextlib.suppress(OSError):
            writer.write(ENDLESS_HEAD)
            while sent < options.endless_header_bytes and not stop.is_set() and not answer.done():
                writer.write(ENDLESS_CHUNK)
                await writer.drain()
                sent += len(ENDLESS_CHUNK)
        # Hold the connection, the header still unfinished, until the server cuts it or the attack ends.
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([answer, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if answer.done():
            stats.endless_cut += 1
            if answer.result().startswith(b"HTTP/1.1 431 "):
                stats.endless_seen_431 += 1
        answer.cancel()
        await _close(writer)
        if not stop.is_set():
            await asyncio.sleep(options.reconnect_delay)


async def _attack(options: AttackOptions, stop_flag: multiprocessing.synchronize.Event) -> AttackStats:
    stats = AttackStats()
    stop = asyncio.Event()
    attackers = [_slowloris(options, stop, stats) for _ in range(options.slowloris)]
    attackers += [_endless_header(options, stop, stats) for _ in range(options.endless_headers)]
    tasks = [asyncio.ensure_future(attacker) for attacker in attackers]
    await asyncio.to_thread(stop_flag.wait)
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    return stats


def run_attack(
    options: AttackOptions,
    stop_flag: multiprocessing.synchronize.Event,
    results: multiprocessing.Queue[dict[str, Any]],
) -> None:
    results.put(asdict(asyncio.run(_attack(options, stop_flag))))


# --- measuring the server ---


def worker_pids(leader: int, workers: int) -> list[int]:
    """The server's worker processes (uvicorn's supervisor spawns them); the leader itself serves alone."""
    if workers == 1:
        return [leader]
    found: list[int] = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            cmdline = (status.parent / "cmdline").read_bytes()
            if int(fields["PPid"]) == leader and b"spawn_main" in cmdline:
                found.append(int(fields["Pid"]))
    if len(found) != workers:
        raise HarnessError(f"expected {workers} workers under process {leader}, found {found}")
    return found


def rss_mib(pids: list[int]) -> float:
    total_kib = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            raise HarnessError(f"worker {pid} is gone: it crashed or was replaced") from None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


class RssSampler:
    """The workers' summed RSS every ``interval`` seconds, in a thread, while the block runs."""

    def __init__(self, pids: list[int], interval: float = 0.25) -> None:
        self.pids, self.interval = pids, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_mib(self.pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def time_requests(port: int, token: str, count: int) -> dict[str, dict[str, Any]]:
    """``count`` sequential requests of each kind on one keep-alive connection; latency summaries in ms."""
    connection = Connection(HOST, port, timeout=60)
    timings: dict[str, list[float]] = {"GET /api/v1/health": [], "GET /api/v1/users/me": []}
    try:
        for _ in range(count):
            for name, auth in (("GET /api/v1/health", None), ("GET /api/v1/users/me", token)):
                response = await connection.request("GET", name.split(" ")[1], token=auth)
                if response.status != 200:
                    raise HarnessError(f"{name} answered {response.status}: {response.body[:200]!r}")
                timings[name].append(response.seconds)
    finally:
        await connection.close()
    return {name: summarize_ms(seconds) for name, seconds in timings.items()}


async def sign_up(port: int) -> str:
    connection = Connection(HOST, port, timeout=60)
    try:
        account = {"username": "edge_bench", "password": PASSWORD}
        created = await connection.request("POST", "/api/v1/users", json_body=account)
        if created.status != 201:
            raise HarnessError(f"sign-up answered {created.status}: {created.body[:200]!r}")
        login = await connection.request("POST", "/api/v1/auth/login", json_body=account)
        if login.status != 200:
            raise HarnessError(f"login answered {login.status}: {login.body[:200]!r}")
        token: str = login.json()["token"]
        return token
    finally:
        await connection.close()


class StockUvicornServer(Server):
    """The same app behind uvicorn's own protocol, started the way ``goodnight serve`` started it before."""

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "goodnight.main:create_app",
            "--factory",
            "--http",
            "httptools",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--no-access-log",
            "--no-server-header",
        ]

    def start(self) -> None:
        migrate = [goodnight_executable(), "migrate"]
        subprocess.run(  # noqa: S603
            migrate, env={**clean_environment(), **self.settings}, cwd=self.folder, check=True
        )
        super().start()


# --- the run ---


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slowloris", type=int, default=500, help="slowloris connections")
    parser.add_argument("--endless-headers", type=int, default=50, help="connections sending endless headers")
    parser.add_argument("--endless-header-mb", type=int, default=20, help="bytes each of those sends, in MB")
    parser.add_argument("--requests", type=int, default=200, help="timed requests of each kind per phase")
    parser.add_argument(
        "--settle", type=float, default=15.0, help="seconds the attack runs before the timed requests"
    )
    parser.add_argument(
        "--reconnect-delay", type=float, default=1.0, help="seconds an endless header cut by the server waits"
    )
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--stock-uvicorn", action="store_true", help="serve with uvicorn's stock protocol")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-attack-") as folder:
        settings = {
            "GOODNIGHT_ENV": "production",
            "GOODNIGHT_JWT_SECRET": secrets.token_urlsafe(48),
            "GOODNIGHT_RATE_LIMITS": "off",
            "GOODNIGHT_DATABASE_URL": args.database_url or f"sqlite+aiosqlite:///{folder}/edge.db",
        }
        kind = StockUvicornServer if args.stock_uvicorn else Server
        server = kind("edge", Path(folder), args.workers, settings)
        print(f"$ {server.command}", flush=True)
        server.start()
        try:
            server.wait_ready()
            measure(server, args)
        except HarnessError:
            print(f"server log (last lines):\n{server.process.log_tail() if server.process else ''}")
            raise
        finally:
            server.stop()


def measure(server: Server, args: argparse.Namespace) -> None:
    assert server.process is not None
    assert server.process.popen is not None
    token = asyncio.run(sign_up(server.port))
    asyncio.run(time_requests(server.port, token, 20))  # warm-up: imports, pools, first queries
    pids = worker_pids(server.process.popen.pid, args.workers)
    time.sleep(1)
    idle_rss = rss_mib(pids)
    idle = asyncio.run(time_requests(server.port, token, args.requests))

    options = AttackOptions(
        server.port, args.slowloris, args.endless_headers, args.endless_header_mb * MIB, args.reconnect_delay
    )
    context = multiprocessing.get_context("spawn")
    stop_flag = context.Event()
    results: multiprocessing.Queue[dict[str, Any]] = context.Queue()
    attacker = context.Process(target=run_attack, args=(options, stop_flag, results), daemon=True)
    started = time.monotonic()
    with RssSampler(pids) as sampler:
        attacker.start()
        print(f"attacking for {args.settle:.0f}s before timing requests ...", flush=True)
        time.sleep(args.settle)
        attacked = asyncio.run(time_requests(server.port, token, args.requests))
        stop_flag.set()
        stats = results.get(timeout=60)
        attacker.join(timeout=30)
    attack_seconds = time.monotonic() - started
    time.sleep(2)
    after_rss = rss_mib(pids)

    report(args, idle_rss, idle, sampler.samples, attacked, after_rss, stats, attack_seconds)


def report(
    args: argparse.Namespace,
    idle_rss: float,
    idle: dict[str, dict[str, Any]],
    attack_rss: list[float],
    attacked: dict[str, dict[str, Any]],
    after_rss: float,
    stats: dict[str, Any],
    attack_seconds: float,
) -> None:
    peak = max(attack_rss)
    protocol = "uvicorn's stock httptools protocol" if args.stock_uvicorn else "goodnight serve"
    print(
        f"\n{protocol}, {args.workers} workers; {args.requests} sequential requests of each kind per phase;"
    )
    print(
        f"attack: {args.slowloris} slowloris and {args.endless_headers} endless headers "
        f"(up to {args.endless_header_mb} MB each) for {attack_seconds:.0f}s\n"
    )
    print("| phase | request | p50 ms | p99 ms | max ms | workers' RSS MiB |")
    print("|---|---|---|---|---|---|")
    for phase, timings, rss in (
        ("idle", idle, f"{idle_rss:.0f}"),
        ("attack", attacked, f"{peak:.0f} (peak)"),
    ):
        for name, summary in timings.items():
            print(f"| {phase} | {name} | {summary['p50']} | {summary['p99']} | {summary['max']} | {rss} |")
    print(
        f"\nworkers' RSS under attack: {peak - idle_rss:+.0f} MiB at the peak; "
        f"{after_rss:.0f} MiB two seconds after the attack"
    )
    lifetimes = stats["slowloris_lifetimes"]
    median_life = f", after a median {statistics.median(lifetimes):.1f}s" if lifetimes else ""
    print(
        f"slowloris: {stats['slowloris_opened']} connections, {stats['slowloris_dropped']} dropped by the "
        f"server{median_life}"
    )
    # A server that closes while the client is still writing resets the connection, and asyncio then drops
    # whatever answer had arrived: the attacker sees only some of the 431s the server sent.
    print(
        f"endless headers: {stats['endless_opened']} connections, {stats['endless_cut']} cut by the server "
        f"({stats['endless_seen_431']} of them seen answering 431 before the reset)"
    )
    if stats["connect_failures"]:
        print(f"connection attempts that failed: {stats['connect_failures']}")


if __name__ == "__main__":
    main()
