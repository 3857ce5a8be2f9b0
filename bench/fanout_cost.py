"""What a clock-out costs each tier per timeline it reaches: the slope the capacity model scales fanout by.

    scripts/uv run --frozen python bench/fanout_cost.py --costs docs/benchmarks/profile-L-costs.json

Runs against the dataset a ``bench/run.py --keep`` run left: its database (``gnbench_<profile>_run``) and the
cached Redis snapshot, loaded into a private redis-server. It starts ``goodnight serve --workers 1`` and one
``goodnight worker`` (so the outbox's CPU is a tier apart), then two authors each clock in and out
``--rounds`` times, the outbox drained and every tier's CPU read around each block: an ordinary user, whose
clock-out reaches a few timelines, and the most-followed user below the celebrity cut, whose clock-out
reaches thousands. Per tier, two points give a cost per night and a cost per timeline reached. With
``--costs``, the figures are written into that costs file (``fanout_cost``), beside the run's own.
Everything it started is stopped, and the database left as it was found but for the nights it logged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gnbench import fanout
from gnbench.cpu import TIERS, CpuMeter, per_request_us
from gnbench.dataset import PROFILES
from gnbench.http import Pool
from gnbench.infra import HarnessError, OutboxWorker, Postgres, RedisServer, Server
from gnbench.workloads import clock_out_latency, login_all

HOST = "127.0.0.1"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "goodnight-bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/fanout_cost.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="L")
    parser.add_argument("--db-prefix", default="gnbench", help="As given to bench/run.py (default gnbench).")
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="bench/run.py's dataset cache."
    )
    parser.add_argument("--password", default="bench-password-1")
    parser.add_argument("--rounds", type=int, default=30, help="Nights each author logs (default 30).")
    parser.add_argument("--costs", type=Path, help="A costs.json to write the figures into.")
    return parser.parse_args(argv)


def authors(postgres: Postgres, database: str, threshold: int) -> dict[str, str]:
    """An ordinary recently active user (about the average 20 followers), and the widest fanout there is."""
    cut = int(threshold * 0.9)  # below the celebrity downgrade ratio: fanned out, never merged
    recent = "last_active_at > (now() AT TIME ZONE 'UTC') - interval '5 days'"
    narrow = postgres.psql(
        f"SELECT username FROM users WHERE {recent} AND followers_count BETWEEN 15 AND 25 "  # noqa: S608
        "ORDER BY md5(username) LIMIT 1",
        database,
    )
    wide = postgres.psql(
        "SELECT username FROM users WHERE followers_count < :cut ORDER BY followers_count DESC LIMIT 1",
        database,
        cut=cut,
    )
    if not narrow or not wide:
        raise HarnessError(f"no authors to measure in {database}")
    return {"narrow": narrow, "wide": wide}


async def measure(
    server: Server, worker: OutboxWorker, meter: CpuMeter, names: dict[str, str], password: str, rounds: int
) -> dict[str, dict[str, Any]]:
    pool = Pool(HOST, server.port)
    try:
        tokens = await login_all(pool, list(names.values()), password)
        blocks: dict[str, dict[str, Any]] = {}
        for label, name in names.items():
            print(f"{label}: {name} logs {rounds} nights ...")
            await fanout.drained(HOST, server.port)
            before, counted = await asyncio.to_thread(meter.read), fanout.counters(worker.base)
            outcome = await clock_out_latency(pool, {label: tokens[name]}, rounds, pause=0)
            await fanout.drained(HOST, server.port)
            await asyncio.sleep(1.5)  # PostgreSQL publishes backend statistics within a second
            after = await asyncio.to_thread(meter.read)
            blocks[label] = {
                "username": name,
                "errors": outcome[label]["errors"],
                "cpu_us_per_night": per_request_us(before, after, rounds),
                "fanout": fanout.delta(counted, fanout.counters(worker.base)),
            }
        return blocks
    finally:
        await pool.close()


def slopes(blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per tier, the line through the two authors' costs: µs per night, and per timeline reached."""
    narrow, wide = blocks["narrow"], blocks["wide"]
    reach = {label: block["fanout"]["entries_per_clock_out"] or 0.0 for label, block in blocks.items()}
    spread = reach["wide"] - reach["narrow"]
    if spread <= 0:
        raise HarnessError(f"the two authors reached as many timelines ({reach}): no slope to measure")
    per_entry = {
        tier: (wide["cpu_us_per_night"][tier] - narrow["cpu_us_per_night"][tier]) / spread for tier in TIERS
    }
    per_night = {tier: narrow["cpu_us_per_night"][tier] - per_entry[tier] * reach["narrow"] for tier in TIERS}
    return {
        "per_entry_us": {tier: round(value, 2) for tier, value in per_entry.items()},
        "per_night_us": {tier: round(value, 1) for tier, value in per_night.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = PROFILES[args.profile]
    database = f"{args.db_prefix}_{profile.name.lower()}_run"
    snapshot = args.data_dir / profile.name / "dump.rdb"
    postgres = Postgres()
    folder = Path(tempfile.mkdtemp(prefix="goodnight-fanout-"))
    redis = RedisServer(folder / "redis")
    processes: list[Server] = []
    try:
        if not postgres.exists(database) or not snapshot.exists():
            raise HarnessError(
                f"needs {database} and {snapshot}: run bench/run.py --profile {profile.name} --keep"
            )
        redis.folder.mkdir()
        shutil.copyfile(snapshot, redis.snapshot)
        print("loading the Redis snapshot ...")
        redis.start()
        settings = {
            "GOODNIGHT_ENV": "production",
            "GOODNIGHT_JWT_SECRET": secrets.token_urlsafe(48),
            "GOODNIGHT_CELEBRITY_THRESHOLD": str(profile.celebrity_threshold),
            "GOODNIGHT_RATE_LIMITS": "off",
            "GOODNIGHT_DATABASE_URL": postgres.url(database),
            "GOODNIGHT_REDIS_URL": redis.url,
            "GOODNIGHT_EMBEDDED_WORKER": "0",
        }
        server = Server("api", folder, 1, settings)
        worker = OutboxWorker("outbox-worker", folder, 1, settings)
        processes = [server, worker]
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready()
        meter = CpuMeter(server, postgres, database, redis, worker)
        names = authors(postgres, database, profile.celebrity_threshold)
        blocks = asyncio.run(measure(server, worker, meter, names, args.password, args.rounds))
        result = {"rounds": args.rounds, "authors": blocks, **slopes(blocks)}
    except HarnessError as exc:
        print(f"bench/fanout_cost.py: {exc}", file=sys.stderr)
        return 2
    finally:
        for process in processes:
            process.stop()
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.costs is not None:
        costs = json.loads(args.costs.read_text())
        costs["fanout_cost"] = result
        args.costs.write_text(json.dumps(costs, indent=2) + "\n")
        print(f"wrote fanout_cost into {args.costs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
