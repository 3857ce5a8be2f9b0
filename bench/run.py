"""Goodnight's load harness: one command, one run, every comparison (see bench/README.md).

    .venv/bin/python bench/run.py --profile M

Seeds (or reuses) a dataset in a PostgreSQL database of its own and a private redis-server, starts
``goodnight serve`` twice on that data (SQL path and Redis path), measures reads with wrk and writes, fanout
lag and a mixed workload with its own client, then writes results.json, results.md and PNG charts to
docs/benchmarks/. Everything it started is stopped, and the run's database dropped, when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gnbench import costs, fanout, report, storage, wrk
from gnbench.cpu import CpuMeter, per_request_us
from gnbench.dataset import PROFILES, Datasets, Prepared, Profile
from gnbench.http import Pool
from gnbench.infra import REPO, HarnessError, OutboxWorker, Postgres, RedisServer, Server
from gnbench.workloads import (
    FEED,
    LagProbe,
    Mix,
    Writer,
    clock_out_latency,
    ensure_awake,
    feed_cursor,
    login_all,
    mixed,
    mixed_capacity,
    sequential,
    warm_up,
)

HOST = "127.0.0.1"
# How the published results name the run's temporary folder.
RUN_FOLDER = "<run folder>"
# How long the mix waits for the outbox the phases before it filled to drain.
OUTBOX_DRAIN_WAIT_S = 120.0
MIXED_LOAD = 0.5  # the share of a server's measured capacity for the mix that --mixed-rate auto targets
ROLES = ("light_user", "median_user", "heavy_user", "celebrity")
FEED_ROLES = ("light_user", "median_user", "heavy_user")
SHORT = {"light_user": "light", "median_user": "median", "heavy_user": "heavy", "celebrity": "celebrity"}
DEFAULT_DATA_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "goodnight-bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("dataset")
    data.add_argument("--profile", choices=sorted(PROFILES), default="S", help="Dataset size (default S).")
    data.add_argument("--seed", type=int, default=1, help="goodnight seed --seed (default 1).")
    data.add_argument("--password", default="bench-password-1", help="The password all seeded users share.")
    data.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"Dataset cache (default {DEFAULT_DATA_DIR})."
    )
    data.add_argument("--no-cache", action="store_true", help="Seed straight into the run's database.")
    data.add_argument("--reseed", action="store_true", help="Seed again even if the cache is usable.")
    data.add_argument(
        "--max-age-hours", type=float, default=12, help="Reuse a cached dataset up to this old (default 12)."
    )
    data.add_argument("--db-prefix", default="gnbench", help="Prefix of the databases the harness creates.")
    data.add_argument("--pg-host", default="127.0.0.1")
    data.add_argument("--pg-port", type=int, default=5432)
    data.add_argument("--pg-user", default="postgres")

    load = parser.add_argument_group("load")
    load.add_argument("--workers", type=int, default=2, help="goodnight serve --workers (default 2).")
    load.add_argument("--duration", type=float, default=10, help="Seconds per wrk run (default 10).")
    load.add_argument("--connections", type=int, default=32, help="wrk -c (default 32).")
    load.add_argument("--threads", type=int, default=2, help="wrk -t (default 2).")
    load.add_argument(
        "--sweep",
        default="8,16,32,64",
        help="wrk connection counts for the throughput-vs-concurrency runs, or 'none' (default 8,16,32,64).",
    )
    load.add_argument("--sweep-duration", type=float, default=5, help="Seconds per sweep run (default 5).")
    load.add_argument(
        "--feed-users",
        default="light,median,heavy",
        help="Whose feeds wrk reads: light, median, heavy (default all three).",
    )
    load.add_argument("--deep-page", type=int, default=5, help="The 'deep' feed page (default 5).")
    load.add_argument(
        "--single-client-requests",
        type=int,
        default=100,
        help="Requests timed one at a time after each wrk run (default 100).",
    )
    load.add_argument("--write-iterations", type=int, default=100, help="Clock-outs per user (default 100).")
    load.add_argument(
        "--lag-samples", type=int, default=50, help="Fanout-lag probes while idle (default 50)."
    )
    load.add_argument(
        "--lag-gap",
        type=float,
        default=0.5,
        help="Seconds between fanout-lag probes during the mixed workload (default 0.5): each probe is a "
        "clock-out fanned out to thousands of timelines, so the probe itself should not be the load.",
    )
    load.add_argument(
        "--mixed-rate",
        default="auto",
        help="Requests/s of the mixed workload, or 'auto': on each server, half the rate it sustains for the "
        "mix in a 5-second closed-loop calibration (default auto).",
    )
    load.add_argument("--mixed-duration", type=float, default=30, help="Seconds of mixed load (default 30).")
    load.add_argument(
        "--mixed-paths", default="redis,sql", help="Servers to run the mixed workload on (default redis,sql)."
    )
    load.add_argument("--readers", type=int, default=24, help="Reader pool of the mixed workload.")
    load.add_argument("--writers", type=int, default=8, help="Writer pool of the mixed workload.")
    load.add_argument(
        "--outbox-worker",
        choices=("embedded", "process"),
        default="embedded",
        help="Where the Redis server's outbox is drained: in its API processes (default), or by a "
        "'goodnight worker' process of its own, whose CPU is then reported as a tier apart.",
    )
    load.add_argument(
        "--write-cost-rounds",
        type=int,
        default=25,
        help="Clock-in + clock-out rounds per writer-pool user for the write-cost run (default 25).",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--output-dir", type=Path, default=REPO / "docs" / "benchmarks", help="Default docs/benchmarks."
    )
    output.add_argument(
        "--no-charts", action="store_true", help="Skip the PNG charts (no matplotlib needed)."
    )
    output.add_argument("--keep", action="store_true", help="Keep the run's database and logs afterwards.")
    args = parser.parse_args(argv)
    args.sweep_levels = [] if args.sweep.strip().lower() in ("", "none", "0") else _ints(args.sweep)
    args.mixed_servers = [name.strip() for name in args.mixed_paths.split(",") if name.strip()]
    args.feed_roles = [f"{name.strip()}_user" for name in args.feed_users.split(",") if name.strip()]
    if not args.feed_roles or any(role not in FEED_ROLES for role in args.feed_roles):
        parser.error("--feed-users takes light, median and/or heavy")
    if any(name not in ("redis", "sql") for name in args.mixed_servers):
        parser.error("--mixed-paths takes redis, sql or both")
    if args.mixed_rate != "auto":
        try:
            args.mixed_rate = float(args.mixed_rate)
        except ValueError:
            parser.error("--mixed-rate takes a number or 'auto'")
    return args


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


class Run:
    """One benchmark run: its folder, services and results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.profile: Profile = PROFILES[args.profile]
        self.feed_roles: list[str] = args.feed_roles
        self.postgres = Postgres(args.pg_host, args.pg_port, args.pg_user)
        self.folder = Path(tempfile.mkdtemp(prefix="goodnight-bench-"))
        (self.folder / "tokens").mkdir()
        (self.folder / "cursors").mkdir()
        self.secret = secrets.token_urlsafe(48)
        self.base_settings = {
            "GOODNIGHT_ENV": "production",
            "GOODNIGHT_JWT_SECRET": self.secret,
            "GOODNIGHT_CELEBRITY_THRESHOLD": str(self.profile.celebrity_threshold),
            # Rate limits are on by default; a load test from one address would measure 429s.
            "GOODNIGHT_RATE_LIMITS": "off",
        }
        self.redis = RedisServer(self.folder / "redis")
        self.redis.folder.mkdir()
        self.datasets = Datasets(
            self.postgres,
            args.data_dir,
            args.db_prefix,
            self.profile,
            seed=args.seed,
            password=args.password,
            base_settings=self.base_settings,
        )
        self.servers: dict[str, Server] = {}
        self.worker: OutboxWorker | None = None
        self.prepared: Prepared | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        started = datetime.now(UTC)
        load_start = os.getloadavg()[0]
        self.postgres.check()
        wrk.require_wrk()
        try:
            self.prepared = self.datasets.prepare(
                self.redis,
                cache=not self.args.no_cache,
                reseed=self.args.reseed,
                max_age_hours=self.args.max_age_hours,
                log_dir=self.folder,
            )
            sizes = self._storage()
            self._start_servers()
            results = _run_async(self._measure())
            results["storage"] = sizes
        finally:
            self.stop()
        results["meta"].update(
            {
                "started_at": started.strftime("%Y-%m-%d %H:%M:%S"),
                "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                "load_average": {"start": load_start, "end": os.getloadavg()[0]},
            }
        )
        results["targets"] = report.targets(results)
        # The commands name files in this run's temporary folder (tokens, the seed summary), gone once it
        # ends: published, they would only name a folder of the machine that ran it.
        return _replaced(results, str(self.folder), RUN_FOLDER)

    def _start_servers(self) -> None:
        assert self.prepared is not None
        common = {
            **self.base_settings,
            "GOODNIGHT_DATABASE_URL": self.postgres.url(self.prepared.database),
            "GOODNIGHT_EMBEDDED_WORKER": "1",
        }
        self.servers["sql"] = Server("sql", self.folder, self.args.workers, common)
        with_redis = {**common, "GOODNIGHT_REDIS_URL": self.redis.url}
        if self.args.outbox_worker == "process":
            with_redis["GOODNIGHT_EMBEDDED_WORKER"] = "0"
            self.worker = OutboxWorker("outbox-worker", self.folder, 1, with_redis)
        self.servers["redis"] = Server("redis", self.folder, self.args.workers, with_redis)
        for server in self._processes():
            server.start()
        for server in self._processes():
            server.wait_ready()
            print(f"{server.name} ready on port {server.port}")

    def _processes(self) -> list[Server]:
        return [*self.servers.values(), *([self.worker] if self.worker is not None else [])]

    def _storage(self) -> dict[str, Any]:
        """Sizes of the dataset as seeded, before any load writes to it."""
        assert self.prepared is not None
        print("measuring storage (PostgreSQL tables, Redis keys, fanout reach) ...")
        database = self.prepared.database
        return {
            "postgres": storage.postgres_sizes(self.postgres, database),
            "redis": storage.redis_sizes(self.redis.url),
            "fanout_reach": storage.fanout_reach(
                self.postgres, database, self.profile.celebrity_threshold, active_days=7
            ),
        }

    def stop(self) -> None:
        for server in self._processes():
            with contextlib.suppress(Exception):
                server.stop()
        with contextlib.suppress(Exception):
            self.redis.stop()
        if not self.args.keep:
            with contextlib.suppress(Exception):
                self.datasets.drop_run_database()
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            print(f"kept: database {self.datasets.run_database}, logs in {self.folder}")

    # --- measurement ---------------------------------------------------------------------------------------

    async def _measure(self) -> dict[str, Any]:
        assert self.prepared is not None
        args, summary = self.args, self.prepared.summary
        pools = {name: Pool(HOST, server.port) for name, server in self.servers.items()}
        people = self._people(summary)
        lag_author, lag_reader = self._lag_pair(people)
        excluded = {person["username"] for person in people.values()} | {lag_author["username"]}
        readers = self._active_users(args.readers, excluded)
        writers = self._active_users(args.writers, excluded | set(readers))
        names = [person["username"] for person in people.values()] + [lag_author["username"]]
        print(f"logging in {len(set(names + readers + writers))} users ...")
        tokens = await login_all(pools["redis"], names + readers + writers, args.password)
        for name, token in tokens.items():
            (self.folder / "tokens" / f"{name}.token").write_text(token + "\n")
        role_token = {role: tokens[person["username"]] for role, person in people.items()}

        # Warm both servers up: every path a wrk run will hit, a few times.
        for name, pool in pools.items():
            paths: list[tuple[str, str | None]] = [("/api/v1/health", None)]
            paths += [("/api/v1/users/me", role_token["light_user"])]
            median = people["median_user"]["id"]
            paths += [
                (f"/api/v1/users/{median}{part}", role_token["light_user"])
                for part in ("", "/followers", "/followings")
            ]
            paths += [(FEED, role_token[role]) for role in self.feed_roles]
            await warm_up(pool, paths, rounds=5)
            print(f"warmed up {name}")

        # The deep page: each server walks to it once; its cursor is fixed for the wrk run.
        cursors: dict[tuple[str, str], tuple[Path, int]] = {}
        for name, pool in pools.items():
            for role in self.feed_roles:
                cursor, reached = await feed_cursor(pool, role_token[role], args.deep_page)
                if cursor is None:
                    continue
                path = self.folder / "cursors" / f"{name}-{SHORT[role]}.cursor"
                path.write_text(cursor + "\n")
                cursors[(name, role)] = (path, reached)

        endpoints = await self._read_runs(people, tokens, cursors, pools)
        sweep = self._sweep_runs(people)
        results: dict[str, Any] = {"endpoints": endpoints, "sweep": sweep}

        print("clock-out latency ...")
        meter = self._meter("redis")
        before = await asyncio.to_thread(meter.read)
        writes = await clock_out_latency(
            pools["redis"],
            {"normal": role_token["median_user"], "celebrity": role_token["celebrity"]},
            args.write_iterations,
        )
        after = await asyncio.to_thread(meter.read)
        # Per request (a clock-in or a clock-out, of both users); the fanout the embedded worker does after
        # each clock-out is in the readings as far as it finished before the second reading.
        results["write_cpu_us_per_request"] = per_request_us(before, after, 4 * args.write_iterations)
        for label, role in (("normal", "median_user"), ("celebrity", "celebrity")):
            writes[label].update(
                username=people[role]["username"], followers=people[role]["followers"], role=role
            )
        results["writes"] = writes
        print("write cost (the writer pool clocks in and out) ...")
        results["write_cost"] = await self._write_cost({user: tokens[user] for user in writers}, pools)

        print("fanout lag (idle) ...")
        probe = LagProbe(pools["redis"], tokens[lag_author["username"]], role_token[lag_reader])
        deleted = await probe.prepare()
        await probe.run(samples=args.lag_samples)
        await probe.cleanup()
        lag: dict[str, Any] = {"idle": probe.result()}
        results["lag_setup"] = {
            "author": lag_author["username"],
            "author_followers": lag_author["followers"],
            "reader": people[lag_reader]["username"],
            "records_deleted_first": deleted,
            "poll_interval_ms": probe.poll_interval * 1000,
        }

        mixed_results: dict[str, Any] = {}
        for name in args.mixed_servers:
            drain_wait = await self._outbox_drained(self.servers[name])
            rate, rate_note, capacity = args.mixed_rate, "--mixed-rate", None
            if rate == "auto":
                # Half of what this server sustains for the same mix, closed loop: each path is measured
                # at a known load (its own), not past saturation, where any server only queues.
                capacity = await mixed_capacity(self._mix(name, readers, writers, tokens))
                rate = max(20.0, round(capacity * MIXED_LOAD, -1))
                rate_note = f"auto: half of the {capacity:,.0f} requests/s this server sustains for the mix"
            print(f"mixed workload on {name} at {rate:g} requests/s for {args.mixed_duration:g}s ...")
            mixed_results[name], lag[f"mixed_{name}"] = await self._mixed(
                name, rate, readers, writers, tokens, lag_author, role_token[lag_reader]
            )
            mixed_results[name]["rate_source"] = rate_note
            # The closed-loop rate: what the capacity model's prediction for this machine is checked against.
            mixed_results[name]["capacity_rps"] = None if capacity is None else round(capacity, 1)
            mixed_results[name]["outbox_drain_wait_s"] = drain_wait
        results["mixed"] = mixed_results
        results["lag"] = lag
        for pool in pools.values():
            await pool.close()

        server_errors = {name: server.error_lines() for name, server in self.servers.items()}
        results.update(self._meta(people, server_errors))
        return results

    async def _mixed(
        self,
        name: str,
        rate: float,
        readers: list[str],
        writers: list[str],
        tokens: dict[str, str],
        lag_author: dict[str, Any],
        lag_reader_token: str,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        server = self.servers[name]
        probe_pool = Pool(HOST, server.port)
        probe = LagProbe(probe_pool, tokens[lag_author["username"]], lag_reader_token)
        stop = asyncio.Event()
        backlog: dict[str, Any] = {"max_pending": None, "max_oldest_age_s": None}
        load = asyncio.create_task(
            mixed(self._mix(name, readers, writers, tokens), rate=rate, duration=self.args.mixed_duration)
        )
        lagging = asyncio.create_task(probe.run(stop=stop, gap=self.args.lag_gap))
        watching = (
            asyncio.create_task(self._watch_backlog(server, stop, backlog)) if name == "redis" else None
        )
        meter = self._meter(name)
        before = await asyncio.to_thread(meter.read)
        fanned_before = await asyncio.to_thread(self._fanout_counters) if name == "redis" else None
        outcome = await load
        if fanned_before is not None:
            await fanout.drained(HOST, server.port)  # the last clock-outs' fanout belongs to this run's cost
        after = await asyncio.to_thread(meter.read)
        # The lag probe and the backlog sampler run beside the load: their few requests are in these figures.
        outcome["cpu_us_per_request"] = per_request_us(before, after, outcome["completed"])
        if fanned_before is not None:
            outcome["fanout"] = fanout.delta(fanned_before, await asyncio.to_thread(self._fanout_counters))
        stop.set()
        await lagging
        if watching is not None:
            await watching
        await probe.cleanup()
        await probe_pool.close()
        if name == "redis":
            outcome["outbox_backlog"] = backlog
        return outcome, probe.result()

    def _meter(self, server_name: str) -> CpuMeter:
        assert self.prepared is not None
        redis, worker = (self.redis, self.worker) if server_name == "redis" else (None, None)
        return CpuMeter(self.servers[server_name], self.postgres, self.prepared.database, redis, worker)

    async def _write_cost(self, writers: dict[str, str], pools: dict[str, Pool]) -> dict[str, Any]:
        """CPU per tier, database rows and WAL per write, and timelines reached per clock-out, for ordinary
        active users (the writer pool) clocking in and out; the outbox is drained before the second reading,
        so every clock-out's fanout is in the figures."""
        assert self.prepared is not None
        server = self.servers["redis"]
        meter = self._meter("redis")
        # Nobody asleep and nothing pending first: a writer an earlier phase left clocked in would be woken
        # by a clock-out of its own, and its fanout counted here.
        for token in writers.values():
            await ensure_awake(pools["redis"], token)
        await fanout.drained(HOST, server.port)
        before = await asyncio.to_thread(meter.read)
        written_before = await asyncio.to_thread(self._database_writes)
        fanned_before = await asyncio.to_thread(self._fanout_counters)
        outcome = await clock_out_latency(pools["redis"], writers, self.args.write_cost_rounds, pause=0)
        await fanout.drained(HOST, server.port)
        await asyncio.sleep(1.5)  # PostgreSQL publishes a backend's statistics within a second of its commit
        after = await asyncio.to_thread(meter.read)
        written_after = await asyncio.to_thread(self._database_writes)
        fanned = fanout.delta(fanned_before, await asyncio.to_thread(self._fanout_counters))
        errors = sum(part["errors"] for part in outcome.values())
        requests = 2 * self.args.write_cost_rounds * len(writers) - errors
        return {
            "writers": len(writers),
            "requests": requests,
            "errors": errors,
            "cpu_us_per_request": per_request_us(before, after, requests),
            "rows_per_request": round((written_after[0] - written_before[0]) / requests, 2),
            # WAL is the whole cluster's: anything else writing to the shared server meanwhile is in it.
            "wal_bytes_per_request": round((written_after[1] - written_before[1]) / requests),
            "other_databases_commits": written_after[2] - written_before[2],
            "fanout": fanned,
        }

    def _database_writes(self) -> tuple[int, int, int]:
        """Rows inserted, updated and deleted in the run's database; the cluster's WAL position in bytes;
        commits in every other database (what else wrote to the shared server, which the WAL includes)."""
        assert self.prepared is not None
        row = self.postgres.rows(
            "SELECT (SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
            "WHERE datname = :'db'), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, "
            "(SELECT sum(xact_commit) FROM pg_stat_database WHERE datname <> :'db')",
            self.prepared.database,
            db=self.prepared.database,
        )[0]
        return int(row[0]), int(row[1]), int(row[2])

    def _fanout_counters(self) -> tuple[float, float]:
        """Fanout's counters from whatever drains the Redis server's outbox."""
        return fanout.counters((self.worker or self.servers["redis"]).base)

    def _mix(self, name: str, readers: list[str], writers: list[str], tokens: dict[str, str]) -> Mix:
        return Mix(
            HOST,
            self.servers[name].port,
            readers=[tokens[user] for user in readers],
            writers=[Writer(tokens[user]) for user in writers],
            seed=self.args.seed,
        )

    async def _outbox_drained(self, server: Server, *, within: float = OUTBOX_DRAIN_WAIT_S) -> float:
        """Wait until the server's outbox is empty, up to ``within`` seconds; returns how long it took. The
        lag probes before the mix each fan a record out to thousands of timelines and delete it again: a mix
        started on their backlog would measure its draining, with pages sent to SQL while it lags."""
        pool = Pool(HOST, server.port)
        started = time.perf_counter()
        try:
            while time.perf_counter() - started < within:
                with contextlib.suppress(Exception):
                    pending, _ = await _outbox_backlog(pool)
                    if pending == 0:
                        break
                await asyncio.sleep(0.2)
        finally:
            await pool.close()
        return round(time.perf_counter() - started, 2)

    async def _watch_backlog(self, server: Server, stop: asyncio.Event, backlog: dict[str, Any]) -> None:
        """Sample the outbox backlog once a second (GET /health/ready) while the mixed workload runs."""
        pool = Pool(HOST, server.port)
        while not stop.is_set():
            with contextlib.suppress(Exception):
                pending, age = await _outbox_backlog(pool)
                backlog["max_pending"] = max(backlog["max_pending"] or 0, pending)
                backlog["max_oldest_age_s"] = round(max(backlog["max_oldest_age_s"] or 0.0, age), 3)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        await pool.close()

    async def _read_runs(
        self,
        people: dict[str, dict[str, Any]],
        tokens: dict[str, str],
        cursors: dict[tuple[str, str], tuple[Path, int]],
        pools: dict[str, Pool],
    ) -> list[dict[str, Any]]:
        """Every read endpoint on both servers, SQL then Redis for each, so both see the same noise.

        After each wrk run, the same request is also timed one at a time by a single client: the cost of
        one request on an otherwise idle server, where wrk's figures are those of a saturated one.
        """
        args = self.args
        token_of = {role: tokens[person["username"]] for role, person in people.items()}
        plan: list[tuple[str, str, str, str, str | None, int | None]] = [
            ("health", "/health", "/api/v1/health", "wrk_plain.lua", None, None),
            ("me", "/users/me", "/api/v1/users/me", "wrk_auth.lua", "light_user", None),
        ]
        # Someone else's profile and lists, as the light user sees them: the median user's.
        median = people["median_user"]["id"]
        for name, part in (("user", ""), ("followers", "/followers"), ("followings", "/followings")):
            path = f"/api/v1/users/{median}{part}"
            plan.append((name, f"/users/{{id}}{part}", path, "wrk_auth.lua", "light_user", None))
        for role in self.feed_roles:
            short = SHORT[role]
            plan.append((f"feed {short} p1", f"feed {short} p1", FEED, "wrk_auth.lua", role, 1))
            plan.append((f"feed {short} deep", "", FEED, "wrk_deep_page.lua", role, None))
        rows: list[dict[str, Any]] = []
        for name, title, path, script, who, page in plan:
            for server_name in ("sql", "redis"):
                server = self.servers[server_name]
                env: dict[str, str] = {}
                token = None if who is None else token_of[who]
                if who is not None:
                    env["GN_TOKEN_FILE"] = str(self.folder / "tokens" / f"{people[who]['username']}.token")
                run_page, run_title, client_path = page, title, path
                if script == "wrk_deep_page.lua":
                    found = cursors.get((server_name, str(who)))
                    if found is None:
                        continue
                    env["GN_CURSOR_FILE"] = str(found[0])
                    run_page, run_title = found[1], f"feed {SHORT[str(who)]} p{found[1]}"
                    client_path = f"{path}?cursor={found[0].read_text().strip()}"
                spec = wrk.WrkRun(
                    f"{server_name} {name}",
                    server.base + path,
                    script,
                    args.connections,
                    args.threads,
                    args.duration,
                    env,
                )
                print(f"wrk {server_name:5} {run_title} ...", end=" ", flush=True)
                meter = self._meter(server_name)
                before = await asyncio.to_thread(meter.read)
                row = await asyncio.to_thread(wrk.run, spec)
                after = await asyncio.to_thread(meter.read)
                row["cpu_us_per_request"] = per_request_us(before, after, row["requests"])
                row.update(server=server_name, name=name, title=run_title, page=run_page)
                row["single_client"] = await sequential(
                    pools[server_name], client_path, token, args.single_client_requests
                )
                p50 = row["latency_ms"]["p50"]
                single = row["single_client"]["latency_ms"]["p50"]
                cpu = row["cpu_us_per_request"]
                print(
                    f"{row['rps']:,.0f} rps, p50 {p50:.2f} ms, errors {row['error_total']}; "
                    f"one client p50 {single:.2f} ms; CPU µs/request api {cpu['api']:.0f} "
                    f"postgres {cpu['postgres']:.0f} redis {cpu['redis']:.0f}"
                )
                rows.append(row)
        return rows

    def _sweep_runs(self, people: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        args = self.args
        heavy = {"GN_TOKEN_FILE": str(self.folder / "tokens" / f"{people['heavy_user']['username']}.token")}
        series = [
            ("redis /health", "redis", "/api/v1/health", "wrk_plain.lua", {}),
            ("redis feed heavy p1", "redis", FEED, "wrk_auth.lua", heavy),
            ("sql feed heavy p1", "sql", FEED, "wrk_auth.lua", heavy),
        ]
        rows: list[dict[str, Any]] = []
        for level in args.sweep_levels:
            for label, server_name, path, script, env in series:
                spec = wrk.WrkRun(
                    label,
                    self.servers[server_name].base + path,
                    script,
                    level,
                    args.threads,
                    args.sweep_duration,
                    env,
                )
                print(f"wrk sweep -c{level} {label} ...", end=" ", flush=True)
                row = wrk.run(spec)
                row.update(server=server_name)
                print(f"{row['rps']:,.0f} rps")
                rows.append(row)
        return rows

    # --- who to measure ------------------------------------------------------------------------------------

    def _people(self, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
        assert self.prepared is not None
        database = self.prepared.database
        people: dict[str, dict[str, Any]] = {}
        for role in ROLES:
            username = summary[role]
            row = self.postgres.rows(
                "SELECT id, followings_count, followers_count FROM users WHERE username_key = :'name'",
                database,
                name=username,
            )[0]
            people[role] = {
                "username": username,
                "id": row[0],
                "followings": int(row[1]),
                "followers": int(row[2]),
            }
        for role in FEED_ROLES:
            people[role]["feed_items"] = int(
                self.postgres.psql(
                    "SELECT count(*) FROM sleep_records r JOIN follows f ON f.followed_id = r.user_id "
                    "AND f.active WHERE f.follower_id = :'id' AND r.clocked_out_at IS NOT NULL "
                    "AND r.clocked_in_at >= (now() AT TIME ZONE 'UTC') - interval '7 days'",
                    database,
                    id=people[role]["id"],
                )
            )
        return people

    def _lag_pair(self, people: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str]:
        """The author for the fanout-lag probe: the light user's most-followed followee below the celebrity
        cut (90% of the threshold), so its clock-out is fanned out, to as many timelines as a normal user's
        can be. The light user's feed is short, so each poll is cheap."""
        assert self.prepared is not None
        reader = "light_user"
        rows = self.postgres.rows(
            "SELECT u.username, u.followers_count FROM follows f JOIN users u ON u.id = f.followed_id "
            "WHERE f.follower_id = :'id' AND f.active AND u.followers_count < :cut "
            "AND u.username_key <> ALL (string_to_array(:'special', ',')) "
            "ORDER BY u.followers_count DESC, u.username_key LIMIT 1",
            self.prepared.database,
            id=people[reader]["id"],
            cut=int(self.profile.celebrity_threshold * 0.9),
            special=",".join(person["username"] for person in people.values()),
        )
        if not rows:
            raise HarnessError(f"{people[reader]['username']} follows nobody below the celebrity threshold")
        return {"username": rows[0][0], "followers": int(rows[0][1])}, reader

    def _active_users(self, count: int, excluded: set[str]) -> list[str]:
        """Users seen recently (so their timelines are warm), not celebrities, in a fixed shuffled order."""
        assert self.prepared is not None
        if count <= 0:
            return []
        rows = self.postgres.rows(
            "SELECT username FROM users "
            "WHERE last_active_at > (now() AT TIME ZONE 'UTC') - interval '5 days' "
            "AND followers_count < :cut AND followings_count > 0 "
            "AND username_key <> ALL (string_to_array(:'skip', ',')) "
            "ORDER BY md5(username || :'seed') LIMIT :count",
            self.prepared.database,
            cut=int(self.profile.celebrity_threshold * 0.9),
            skip=",".join(sorted(excluded)),
            seed=self.args.seed,
            count=count,
        )
        return [row[0] for row in rows]

    def _meta(self, people: dict[str, dict[str, Any]], server_errors: dict[str, int]) -> dict[str, Any]:
        assert self.prepared is not None
        args = self.args
        versions = {
            "postgresql": self.postgres.version(),
            "redis": "?",
            "python": sys.version.split()[0],
            "wrk": wrk.wrk_version(),
            "goodnight": _goodnight_version(),
        }
        with contextlib.suppress(Exception):
            versions["redis"] = self.redis.info("server").get("redis_version", "?")
        return {
            "meta": {
                "profile": self.profile.name,
                "command": _command_line(),
                "machine": report.machine(versions),
                "server_error_log_lines": server_errors,
            },
            "settings": {
                "workers": args.workers,
                "threads": args.threads,
                "connections": args.connections,
                "duration_s": args.duration,
                "sweep_duration_s": args.sweep_duration,
                "sweep_levels": args.sweep_levels,
                "deep_page": args.deep_page,
                "single_client_requests": args.single_client_requests,
                "write_iterations": args.write_iterations,
                "lag_samples": args.lag_samples,
                "lag_gap_s": args.lag_gap,
                "mixed_duration_s": args.mixed_duration,
                "outbox_worker": args.outbox_worker,
                "write_cost_rounds": args.write_cost_rounds,
                "rate_limits": self.base_settings["GOODNIGHT_RATE_LIMITS"],
            },
            "dataset": {
                "profile": self.profile.name,
                "celebrity_threshold": self.profile.celebrity_threshold,
                "reused": self.prepared.reused,
                "seed_seconds": self.prepared.seed_seconds,
                "prepare_seconds": round(self.prepared.prepare_seconds, 1),
                "seed_command": self.prepared.seed_command,
                "cache": _home_relative(self.prepared.cache),
                "summary": {
                    key: self.prepared.summary.get(key)
                    for key in (
                        "users",
                        "follows",
                        "sleep_records",
                        "records_in_window",
                        "active_users",
                        "anchor",
                        "celebrities",
                        "timelines",
                    )
                },
                "people": {
                    role: {k: v for k, v in person.items() if k != "id"} for role, person in people.items()
                },
            },
            "servers": {
                server.name: {"port": server.port, "command": server.command} for server in self._processes()
            },
        }


def _run_async(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """uvloop when it is installed (it is, with uvicorn[standard]): less client overhead per request."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)


def _goodnight_version() -> str:
    try:
        return importlib.metadata.version("goodnight")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _command_line() -> str:
    """How this run was started, from the repository root."""
    if os.environ.get("UV"):  # under uv run (scripts/uv run --frozen --group bench python bench/run.py ...)
        launcher = ["scripts/uv", "run", "--frozen", "--group", "bench", "python"]
    else:
        executable = Path(sys.executable)
        launcher = [str(executable.relative_to(REPO)) if executable.is_relative_to(REPO) else str(executable)]
    return shlex.join([*launcher, "bench/run.py", *sys.argv[1:]])


async def _outbox_backlog(pool: Pool) -> tuple[int, float]:
    """The outbox's events pending or in flight, and the oldest one's age in seconds (GET /health/ready)."""
    answer = await pool.request("GET", "/api/v1/health/ready")
    outbox = answer.json().get("outbox") or {}
    pending = int(outbox.get("pending", 0)) + int(outbox.get("in_flight", 0))
    return pending, float(outbox.get("oldest_age_seconds") or 0.0)


def _home_relative(path: str | None) -> str | None:
    """``path`` with the home directory written ``~``: published, it names no account of the machine."""
    if path is None:
        return None
    home = str(Path.home())
    return "~" + path[len(home) :] if path == home or path.startswith(home + os.sep) else path


def _replaced(value: Any, old: str, new: str) -> Any:
    """``value`` (JSON-like) with ``old`` replaced by ``new`` in every string it holds."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {key: _replaced(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_replaced(item, old, new) for item in value]
    return value


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the finally blocks stop every process the run started."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    run = Run(args)
    try:
        with _terminate_as_interrupt():
            results = run.execute()
    except HarnessError as exc:
        print(f"bench/run.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench/run.py: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    drawn = report.write_outputs(results, args.output_dir, charts=not args.no_charts)
    costs.write(results, args.output_dir / "costs.json")
    print()
    for row in results["targets"]:
        value = "-" if row["value"] is None else f"{row['value']:g}"
        verdict = "PASS" if row["pass"] else "MISS"
        print(f"{verdict} {row['target']}: {value} ({row['comparison']} {row['limit']:g})")
    written = ["results.json", "results.md", "costs.json", *drawn.values()]
    print(f"\nwrote {', '.join(written)} to {args.output_dir} in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
