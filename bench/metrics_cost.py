"""What the metrics cost a Redis feed page: one run, the same server with metrics on and with them off.

    scripts/uv run --frozen python bench/metrics_cost.py [--profile S] [--rounds 8] [--cpu-rounds 4]

It prepares a dataset as ``bench/run.py`` does (a seeded PostgreSQL database, cached as a template, and a
private redis-server with the timelines; under a database prefix and cache folder of its own, so it never
touches a harness run's), then measures page 1 of the median reader's feed two ways:

1. Throughput: ``goodnight serve --workers 2`` twice on the Redis path, once with ``GOODNIGHT_METRICS=off``;
   wrk against each in turn, ``--rounds`` times; the medians and the best runs compared (on / off). The
   metrics' own figures confirm that the pages came from Redis.
2. CPU per page: the app called in process (``gnbench.asgi``), microseconds of process CPU per page, the best
   of three runs, in a process of its own per variant (prometheus-client picks its storage when imported):
   metrics off, on in one process, and on in multiprocess mode (what ``--workers 2`` runs: every value in a
   memory-mapped file). The variants take turns, ``--cpu-rounds`` times, and each keeps its best figure, so
   a burst of load elsewhere on a shared machine disturbs all of them alike or none.

Everything it started is stopped, and its run database dropped, when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from gnbench import wrk
from gnbench.asgi import call, cpu_us, get_scope
from gnbench.dataset import PROFILES, Datasets
from gnbench.http import Pool
from gnbench.infra import Postgres, RedisServer, Server, clean_environment
from gnbench.workloads import FEED, login, warm_up
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"
PASSWORD = "bench-password-1"  # noqa: S105  (what every seeded user shares, as in bench/run.py)
DATA_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "goodnight-bench-metrics"
READER = "median_user"
CPU_MARKER = "CPU_US_PER_PAGE "
RECORD_MARKER = "CPU_US_PER_RECORD "
# Each variant's settings; the multiprocess one also gets a PROMETHEUS_MULTIPROC_DIR of its own.
CPU_VARIANTS = {"off": {"GOODNIGHT_METRICS": "off"}, "on": {}, "on, multiprocess": {}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="S")
    parser.add_argument("--rounds", type=int, default=8, help="off/on pairs of wrk runs (default 8)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--cpu-rounds", type=int, default=4, help="turns of the CPU variants (default 4)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db-prefix", default="gnmetrics")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--cpu-probe", type=uuid.UUID, help=argparse.SUPPRESS)  # one variant's process
    return parser.parse_args()


# --- throughput ------------------------------------------------------------------------------------------


async def prepare_reader(servers: dict[str, Server], username: str) -> str:
    """The reader's token, with both servers warmed up on their feed."""
    pools = {name: Pool(HOST, server.port) for name, server in servers.items()}
    token = await login(pools["on"], username, PASSWORD)
    for pool in pools.values():
        # The first read of a timeline may rebuild it; then every path is warm.
        await warm_up(pool, [(FEED, token)], rounds=20)
        await pool.close()
    return token


def feed_sources(server: Server) -> dict[str, float]:
    """Feed pages by source and reason, from the server's own /metrics (loopback: no token needed)."""
    text = httpx.get(f"{server.base}/metrics", timeout=10).text
    pages: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "goodnight_feed_pages_total":
                key = f"{sample.labels['source']}/{sample.labels['reason']}"
                pages[key] = pages.get(key, 0.0) + sample.value
    return pages


def throughput(
    args: argparse.Namespace, servers: dict[str, Server], token_file: Path
) -> list[dict[str, Any]]:
    rows = []
    for round_number in range(1, args.rounds + 1):
        for name in ("off", "on"):
            spec = wrk.WrkRun(
                f"metrics {name}",
                servers[name].base + FEED,
                "wrk_auth.lua",
                args.connections,
                args.threads,
                args.duration,
                {"GN_TOKEN_FILE": str(token_file)},
            )
            row = wrk.run(spec)
            row.update(metrics=name, round=round_number)
            print(
                f"round {round_number} metrics {name:3}: {row['rps']:,.0f} rps, "
                f"p50 {row['latency_ms']['p50']:.2f} ms, errors {row['error_total']}",
                flush=True,
            )
            rows.append(row)
    return rows


# --- CPU per page ----------------------------------------------------------------------------------------


async def cpu_probe(reader_id: uuid.UUID) -> float:
    """This process's CPU per feed page, with the settings in its environment."""
    from goodnight.config import get_settings
    from goodnight.main import create_app

    app = create_app(get_settings())
    async with app.router.lifespan_context(app):
        services = app.state.services
        reader = services.timeline.reader
        feed = get_scope(FEED, services.tokens.issue(reader_id).token)
        for _ in range(3):  # the first reads may build the timeline and load the celebrity snapshot
            await call(app, feed)
            await reader.drain_background()
        declined = reader.declined
        figure = await cpu_us(lambda: call(app, feed), calls=2000, runs=3)
        if reader.declined != declined:
            raise SystemExit("some pages were answered from SQL: is the reader's timeline warm?")
        return figure


async def record_probe() -> float:
    """CPU per request of what metrics on adds to it: the HTTP series of one request, net of the loop."""
    from goodnight.observability.metrics import HttpRecorder

    recorder = HttpRecorder()

    async def record() -> None:
        recorder.started()
        recorder.finished("GET", FEED, 200, 0.004)

    async def nothing() -> None:
        return None

    return await cpu_us(record, calls=20_000, runs=5) - await cpu_us(nothing, calls=20_000, runs=5)


def probe_output(result: subprocess.CompletedProcess[str], marker: str) -> float:
    line = next((row for row in result.stdout.splitlines() if row.startswith(marker)), None)
    if result.returncode != 0 or line is None:
        raise SystemExit(f"the CPU probe failed:\n{result.stdout}\n{result.stderr[-2000:]}")
    return float(line.removeprefix(marker))


def cpu_per_page(
    args: argparse.Namespace, common: dict[str, str], reader_id: str, folder: Path
) -> tuple[dict[str, float], dict[str, float]]:
    """The best CPU per page of each variant, and the best CPU per request of its HTTP series alone."""
    pages: dict[str, float] = {}
    records: dict[str, float] = {}
    for round_number in range(1, args.cpu_rounds + 1):
        for name, settings in CPU_VARIANTS.items():
            env = {**clean_environment(), **common, **settings, "GOODNIGHT_EMBEDDED_WORKER": "false"}
            if name.endswith("multiprocess"):
                shared = Path(tempfile.mkdtemp(dir=folder, prefix="multiprocess-"))
                env["PROMETHEUS_MULTIPROC_DIR"] = str(shared)
            result = subprocess.run(  # noqa: S603
                [sys.executable, __file__, "--cpu-probe", reader_id],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            page, record = probe_output(result, CPU_MARKER), probe_output(result, RECORD_MARKER)
            pages[name] = min(pages.get(name, page), page)
            records[name] = min(records.get(name, record), record)
            print(
                f"cpu round {round_number} metrics {name}: {page:.0f} µs per page "
                f"(recording the HTTP series: {record:.2f} µs)",
                flush=True,
            )
    return pages, records


# --- the run ---------------------------------------------------------------------------------------------


def report(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    pages: dict[str, float],
    cpu: dict[str, float],
    records: dict[str, float],
) -> None:
    rps = {name: [row["rps"] for row in rows if row["metrics"] == name] for name in ("off", "on")}
    median = {name: statistics.median(values) for name, values in rps.items()}
    best = {name: max(values) for name, values in rps.items()}
    print()
    print(
        f"feed page 1 of the {READER}, profile {args.profile}, wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration:g}s x {args.rounds} rounds each, goodnight serve --workers {args.workers}"
    )
    for label, figures in (("median", median), ("best", best)):
        ratio = figures["on"] / figures["off"]
        print(
            f"{label} rps: metrics off {figures['off']:,.0f}, on {figures['on']:,.0f}; on/off = {ratio:.3f}"
        )
    print(f"feed pages the metrics-on server counted, by source/reason: {pages}")
    for name in ("on", "on, multiprocess"):
        cost = 100 * (cpu[name] / cpu["off"] - 1)
        share = 100 * records[name] / cpu["off"]
        print(
            f"CPU per page: metrics off {cpu['off']:.0f} µs, {name} {cpu[name]:.0f} µs ({cost:+.1f} %); "
            f"the HTTP series alone {records[name]:.2f} µs per request ({share:.2f} % of the page)"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def main() -> int:
    args = parse_args()
    if args.cpu_probe is not None:
        print(f"{CPU_MARKER}{asyncio.run(cpu_probe(args.cpu_probe)):.1f}")
        print(f"{RECORD_MARKER}{asyncio.run(record_probe()):.2f}")
        return 0
    profile = PROFILES[args.profile]
    postgres = Postgres()
    postgres.check()
    wrk.require_wrk()
    folder = Path(tempfile.mkdtemp(prefix="goodnight-metrics-cost-"))
    base = {
        "GOODNIGHT_ENV": "production",
        "GOODNIGHT_JWT_SECRET": secrets.token_urlsafe(48),
        "GOODNIGHT_CELEBRITY_THRESHOLD": str(profile.celebrity_threshold),
        "GOODNIGHT_RATE_LIMITS": "off",
    }
    redis = RedisServer(folder / "redis")
    redis.folder.mkdir()
    datasets = Datasets(
        postgres, args.data_dir, args.db_prefix, profile, seed=1, password=PASSWORD, base_settings=base
    )
    servers: dict[str, Server] = {}
    try:
        prepared = datasets.prepare(redis, cache=True, reseed=False, max_age_hours=12, log_dir=folder)
        common = {
            **base,
            "GOODNIGHT_DATABASE_URL": postgres.url(prepared.database),
            "GOODNIGHT_REDIS_URL": redis.url,
        }
        servers["off"] = Server("metrics-off", folder, args.workers, {**common, "GOODNIGHT_METRICS": "off"})
        servers["on"] = Server("metrics-on", folder, args.workers, {**common, "GOODNIGHT_METRICS": "on"})
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
        username = prepared.summary[READER]
        token_file = folder / "reader.token"
        token_file.write_text(asyncio.run(prepare_reader(servers, username)) + "\n")
        rows = throughput(args, servers, token_file)
        pages = feed_sources(servers["on"])
        for server in servers.values():
            server.stop()  # the CPU figures want the machine to themselves
        query = "SELECT id FROM users WHERE username_key = :'name'"
        reader_id = postgres.rows(query, prepared.database, name=username)[0][0]
        cpu, records = cpu_per_page(args, common, reader_id, folder)
    finally:
        for server in servers.values():
            server.stop()
        redis.stop()
        datasets.drop_run_database()
        shutil.rmtree(folder, ignore_errors=True)
    report(args, rows, pages, cpu, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
