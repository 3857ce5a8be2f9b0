"""Capacity model: the machines each tier needs for a number of users, from measured per-operation costs.

    scripts/uv run --frozen python bench/capacity.py                 # 10M and 100M users, default workload
    scripts/uv run --frozen python bench/capacity.py --users 5e6 --follows-per-user 120
    scripts/uv run --frozen python bench/capacity.py --check         # the model against the run it came from

The costs (CPU per request on each tier, per timeline a clock-out reaches, bytes per row and per Redis entry)
are read from a ``costs.json`` that ``bench/run.py`` writes beside its results and ``bench/fanout_cost.py``
completes; the committed one is profile L's (1M users): docs/benchmarks/profile-L-costs.json. Everything else
is arithmetic on a workload description, whose defaults are in ``Workload`` and ``Machines`` (all flags).
The assumptions:

- Reads are feed pages; ``--sql-read-share`` of them are answered by PostgreSQL (cold or rebuilding timelines,
  lists, history) at the SQL path's measured cost, on the read replicas. Every write runs on the primary.
- A night is a clock-in and a clock-out: twice the measured write, plus, for each timeline its clock-out
  reaches beyond the measured writers', the measured cost per timeline on each tier (bench/fanout_cost.py).
- A clock-out reaches the author's followers active within the feed window, none for a celebrity:
  follows * weekly-active share * the reach factor measured on the dataset (which accounts for celebrities).
- Costs measured one operation at a time are multiplied, per tier, by how far they fell short of the mixed
  workload's measured CPU (``--check`` shows the comparison; a factor is never below 1).
- Redis holds the window (7 days) of timeline entries and renderings and a marker per warm timeline (one per
  weekly-active user), times the overhead ``INFO memory`` shows beyond the sampled keys.
- Every tier is sized for the peak (mean * ``--peak-to-mean``) at ``--target-utilisation`` of its CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_COSTS = REPO / "docs" / "benchmarks" / "profile-L-costs.json"
WINDOW_DAYS = 7  # the feed window (goodnight.feed.window)
DAY = 86_400.0
GB = 1e9
TIERS = ("api", "postgres", "redis", "worker")
Tiers = dict[str, float]


@dataclass(frozen=True)
class Workload:
    users: float
    daily_active_share: float = 0.3  # users who open their feed on a given day
    weekly_active_share: float = 0.5  # active within the window: their timelines are warm and fanned out to
    follows_per_user: float = 50.0
    reads_per_active_day: float = 20.0  # feed pages per daily-active user
    nights_per_user_day: float = 0.3  # nights logged per user per day (a clock-in and a clock-out each)
    peak_to_mean: float = 3.0  # nights are logged at night: the peak hour is well above the day's mean
    sql_read_share: float = 0.1  # reads PostgreSQL answers (replicas) rather than Redis


@dataclass(frozen=True)
class Machines:
    target_utilisation: float = 0.6
    api_machine_cores: int = 2  # one API process (or outbox worker) per core
    db_cores: int = 16  # cores of the PostgreSQL primary and of each replica
    redis_shard_memory_gb: float = 25.0  # data per shard, leaving room for fork-on-save and replication
    # A Redis shard executes commands on one core.


@dataclass(frozen=True)
class Costs:
    """The measured figures: µs of CPU by tier per request or per timeline reached, bytes per stored item."""

    read_redis: Tiers
    read_sql: Tiers
    write: Tiers  # one clock-in or clock-out of an ordinary active user, its fanout included
    write_reach: float  # timelines those writers' clock-outs reached
    per_timeline: Tiers  # a clock-out's cost per timeline it reaches
    reach_factor: float  # the dataset's timelines per clock-out / (follows per user * weekly-active share)
    rows_per_write: float
    wal_bytes_per_write: float
    bytes_per_user: float
    bytes_per_follow: float
    bytes_per_record: float
    # Per entry: the sampled buckets' bytes over their entries (a bucket key's overhead spread over them).
    bytes_per_entry: float
    bytes_per_rendering: float
    bytes_per_warm_timeline: float  # its marker
    redis_overhead: float
    mix_factor: Tiers  # measured mixed-workload CPU / the model's, per tier, at least 1

    @classmethod
    def load(cls, data: dict[str, Any]) -> Costs:
        cpu, redis, pg = data["cpu_us"], data["redis"], data["postgres"]
        profile = profile_workload(data)
        reach = profile.follows_per_user * profile.weekly_active_share
        measured = cls(
            read_redis=_tiers(cpu["feed_page_redis"]),
            read_sql=_tiers(cpu["feed_page_sql"]),
            write=_tiers(cpu["write"]),
            write_reach=float(data["fanout"]["entries_per_clock_out_writers"]),
            per_timeline=_tiers(data["fanout_cost"]["per_entry_us"]),
            reach_factor=data["fanout"]["entries_per_clock_out_dataset"] / reach if reach else 0.0,
            rows_per_write=float(data["writes"]["rows_per_request"]),
            wal_bytes_per_write=float(data["writes"]["wal_bytes_per_request"]),
            bytes_per_user=float(pg["bytes_per_user"]),
            bytes_per_follow=float(pg["bytes_per_follow"]),
            bytes_per_record=float(pg["bytes_per_record"]),
            bytes_per_entry=float(redis["bytes_per_timeline_entry"]),
            bytes_per_rendering=float(redis["bytes_per_rendering"]),
            bytes_per_warm_timeline=float(redis["bytes_per_warm_marker"]),
            redis_overhead=float(redis["overhead_factor"]),
            mix_factor=dict.fromkeys(TIERS, 1.0),
        )
        predicted, observed = mixed_run(data, measured), data["cpu_us"].get("mixed_redis")
        if predicted is None or not observed:
            return measured
        factor = {
            tier: max(1.0, observed[tier] / predicted[tier]) if predicted[tier] else 1.0 for tier in TIERS
        }
        return replace(measured, mix_factor=factor)

    def night(self, reach: float) -> Tiers:
        """A clock-in and a clock-out whose clock-out reaches ``reach`` timelines."""
        extra = reach - self.write_reach
        return {tier: 2 * self.write[tier] + extra * self.per_timeline[tier] for tier in TIERS}


def _tiers(cpu: dict[str, float]) -> Tiers:
    return {tier: float(cpu.get(tier, 0.0)) for tier in TIERS}


def profile_workload(data: dict[str, Any]) -> Workload:
    """The workload of the dataset the costs were measured on (its nights, follows and active users)."""
    dataset = data["dataset"]
    users = float(dataset["users"])
    return Workload(
        users=users,
        weekly_active_share=dataset["active_users"] / users,
        follows_per_user=dataset["follows"] / users,
        nights_per_user_day=dataset["records_in_window"] / users / WINDOW_DAYS,
    )


def plan(work: Workload, costs: Costs, machines: Machines) -> dict[str, float]:
    """Every figure of the plan for one workload, by name."""
    util = machines.target_utilisation
    nights_day = work.users * work.nights_per_user_day
    nights = nights_day / DAY * work.peak_to_mean
    reads = work.users * work.daily_active_share * work.reads_per_active_day / DAY * work.peak_to_mean
    redis_reads, sql_reads = reads * (1 - work.sql_read_share), reads * work.sql_read_share
    reach = work.follows_per_user * work.weekly_active_share * costs.reach_factor
    night = costs.night(reach)

    def cores(tier: str, *, writes: bool = True) -> float:
        spent = redis_reads * costs.read_redis[tier] + sql_reads * costs.read_sql[tier]
        return (spent + (nights * night[tier] if writes else 0.0)) * costs.mix_factor[tier] / 1e6

    api_processes = math.ceil(cores("api") / util)
    redis_bytes = costs.redis_overhead * (
        nights_day * WINDOW_DAYS * (reach * costs.bytes_per_entry + costs.bytes_per_rendering)
        + work.users * work.weekly_active_share * costs.bytes_per_warm_timeline
    )
    read_db_cores = cores("postgres", writes=False)
    return {
        "peak_reads_per_s": reads,
        "peak_writes_per_s": 2 * nights,
        "timelines_per_clock_out": reach,
        "api_processes": api_processes,
        "api_machines": math.ceil(api_processes / machines.api_machine_cores),
        "outbox_workers": math.ceil(nights * night["worker"] * costs.mix_factor["worker"] / 1e6 / util),
        "redis_memory_gb": redis_bytes / GB,
        "redis_cores": cores("redis"),
        "redis_shards": max(
            math.ceil(redis_bytes / GB / machines.redis_shard_memory_gb), math.ceil(cores("redis") / util), 1
        ),
        "primary_rows_per_s": 2 * nights * costs.rows_per_write,
        "primary_wal_mb_per_s": 2 * nights * costs.wal_bytes_per_write / 1e6,
        "primary_write_cores": nights * night["postgres"] * costs.mix_factor["postgres"] / 1e6,
        "replica_read_cores": read_db_cores,
        "replicas": math.ceil(read_db_cores / (machines.db_cores * util)),
        "postgres_gb_now": (
            work.users * (costs.bytes_per_user + work.follows_per_user * costs.bytes_per_follow)
            + nights_day * WINDOW_DAYS * costs.bytes_per_record
        )
        / GB,
        "postgres_gb_per_year": nights_day * 365 * costs.bytes_per_record / GB,
    }


# --- the check against the run the costs came from ----------------------------------------------------------


def mixed_run(data: dict[str, Any], costs: Costs) -> Tiers | None:
    """The model's CPU per request of the profile's mixed workload on the Redis path, from the costs measured
    one operation at a time: its reads and writes, and the fanout-lag probe that ran beside them (its polls,
    its own requests, and its fanout counted twice: added, then taken out when the next probe deletes it)."""
    mixed, probe = data["mixed"].get("redis"), data.get("lag_probe")
    if not mixed or not probe or not mixed.get("completed") or not mixed.get("fanout"):
        return None
    polls = probe["samples"] * probe["mean_lag_ms"] / probe["poll_interval_ms"]
    probe_requests = 3 * probe["samples"]  # delete the last probe's night, clock in, clock out
    probe_timelines = max(0.0, mixed["fanout"]["entries"] - mixed["writes"] / 2 * costs.write_reach)
    return {
        tier: (
            (mixed["reads"] + polls) * costs.read_redis[tier]
            + (mixed["writes"] + probe_requests) * costs.write[tier]
            + 2 * probe_timelines * costs.per_timeline[tier]
        )
        / mixed["completed"]
        for tier in TIERS
    }


def check(data: dict[str, Any], costs: Costs) -> list[tuple[str, float, float]]:
    """(figure, model, measured) for what the profile's own run measured as a whole."""
    work = profile_workload(data)
    rows: list[tuple[str, float, float]] = []
    predicted = plan(replace(work, peak_to_mean=1.0, sql_read_share=0.0), costs, Machines())
    rows.append(("Redis used_memory (GB)", predicted["redis_memory_gb"], data["redis"]["used_memory"] / GB))
    tables = data["postgres"]["tables"]
    stored = (
        tables["users"]["rows"] * costs.bytes_per_user
        + tables["follows"]["rows"] * costs.bytes_per_follow
        + tables["sleep_records"]["rows"] * costs.bytes_per_record
    )
    rows.append(("PostgreSQL database (GB, 8 nights)", stored / GB, data["postgres"]["database_bytes"] / GB))
    rows.append(
        (
            "timelines per clock-out: writers measured vs dataset",
            costs.write_reach,
            data["fanout"]["entries_per_clock_out_dataset"],
        )
    )
    model, measured = mixed_run(data, costs), data["cpu_us"].get("mixed_redis")
    if model is None or not measured:
        return rows
    for tier in TIERS:
        rows.append((f"mixed 10:1, {tier} CPU µs/request", model[tier], float(measured[tier])))
    total = sum(model.values())
    rows.append(("mixed 10:1, all tiers CPU µs/request", total, sum(measured[tier] for tier in TIERS)))
    mixed = data["mixed"]["redis"]
    if mixed.get("capacity_rps"):
        # The calibration that found the capacity ran without the probe: the mix alone, on every core.
        nproc = data["source"]["nproc"]
        share = mixed["reads_per_write"] / (mixed["reads_per_write"] + 1)
        alone = sum(share * costs.read_redis[tier] + (1 - share) * costs.write[tier] for tier in TIERS)
        rows.append((f"mixed 10:1 requests/s, all {nproc} cores", nproc * 1e6 / alone, mixed["capacity_rps"]))
        factored = sum(
            (share * costs.read_redis[tier] + (1 - share) * costs.write[tier]) * costs.mix_factor[tier]
            for tier in TIERS
        )
        rows.append(
            ("the same, with the mixed-workload factors", nproc * 1e6 / factored, mixed["capacity_rps"])
        )
    return rows


# --- output -------------------------------------------------------------------------------------------------

ROWS: list[tuple[str, str, str]] = [
    ("load", "peak_reads_per_s", "feed reads/s at peak"),
    ("load", "peak_writes_per_s", "writes/s at peak (clock-ins + clock-outs)"),
    ("load", "timelines_per_clock_out", "timelines each clock-out reaches"),
    ("API", "api_processes", "API processes (one core each)"),
    ("API", "api_machines", "2-core API machines"),
    ("outbox", "outbox_workers", "outbox worker processes (one core each)"),
    ("Redis", "redis_memory_gb", "Redis memory (GB)"),
    ("Redis", "redis_cores", "Redis CPU (cores)"),
    ("Redis", "redis_shards", "Redis Cluster primaries (shards)"),
    ("PostgreSQL", "primary_rows_per_s", "primary: rows written/s"),
    ("PostgreSQL", "primary_wal_mb_per_s", "primary: WAL MB/s"),
    ("PostgreSQL", "primary_write_cores", "primary: CPU cores for writes"),
    ("PostgreSQL", "replica_read_cores", "CPU cores for reads"),
    ("PostgreSQL", "replicas", "read replicas"),
    ("PostgreSQL", "postgres_gb_now", "database size, one week of nights (GB)"),
    ("PostgreSQL", "postgres_gb_per_year", "growth per year, sleep records (GB)"),
]


def _number(value: float) -> str:
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


def table(plans: dict[str, dict[str, float]]) -> str:
    heads = list(plans)
    lines = ["| tier | figure | " + " | ".join(heads) + " |", "|---|---|" + "---:|" * len(heads)]
    for tier, key, label in ROWS:
        cells = " | ".join(_number(plans[head][key]) for head in heads)
        lines.append(f"| {tier} | {label} | {cells} |")
    return "\n".join(lines)


def check_table(rows: list[tuple[str, float, float]]) -> str:
    lines = ["| figure | model | measured | model / measured |", "|---|---:|---:|---:|"]
    for label, predicted, measured in rows:
        ratio = f"{predicted / measured:.2f}" if measured else "-"
        lines.append(f"| {label} | {_number(predicted)} | {_number(measured)} | {ratio} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/capacity.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--costs", type=Path, default=DEFAULT_COSTS, help=f"Default {DEFAULT_COSTS.name}.")
    parser.add_argument("--users", default="10e6,100e6", help="User counts, comma-separated (10e6,100e6).")
    for spec in (*fields(Workload)[1:], *fields(Machines)):
        flag = "--" + spec.name.replace("_", "-")
        parser.add_argument(
            flag, type=type(spec.default), default=spec.default, help=f"Default {spec.default}."
        )
    parser.add_argument("--check", action="store_true", help="Compare the model with the measured run.")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of Markdown tables.")
    args = parser.parse_args(argv)
    try:
        args.user_counts = [float(users) for users in args.users.split(",")]
    except ValueError:
        parser.error(f"--users takes numbers such as 10e6,100e6, not {args.users!r}")
    if min(args.user_counts) <= 0:
        parser.error("--users takes positive numbers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        data = json.loads(args.costs.read_text())
        costs = Costs.load(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(
            f"bench/capacity.py: cannot use {args.costs} as costs ({exc!r}); bench/run.py writes one and "
            "bench/fanout_cost.py completes it",
            file=sys.stderr,
        )
        return 2
    machines = Machines(**{spec.name: getattr(args, spec.name) for spec in fields(Machines)})
    options = {spec.name: getattr(args, spec.name) for spec in fields(Workload)[1:]}
    plans = {
        f"{users / 1e6:g}M users": plan(Workload(users=users, **options), costs, machines)
        for users in args.user_counts
    }
    checked = check(data, costs) if args.check else None
    if args.json:
        print(json.dumps({"plans": plans, "mix_factor": costs.mix_factor, "check": checked}, indent=2))
        return 0
    source = data["source"]
    print(f"Costs: {args.costs.name} (profile {source['profile']}, run of {source['started_at']} UTC)")
    factors = ", ".join(f"{tier} {value:.2f}" for tier, value in costs.mix_factor.items())
    print(f"Mixed-workload factors applied to CPU: {factors}")
    print()
    print(table(plans))
    if checked is not None:
        print()
        print(
            f"Check against profile {source['profile']}'s own run (the model without the mixed-workload "
            "factors, but for the last row):"
        )
        print()
        print(check_table(checked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
