"""The machine description, the targets of issue 4, and the outputs: results.json, results.md, PNG charts."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gnbench.infra import REPO

CHARTS = {
    "latency": "latency-percentiles.png",
    "concurrency": "throughput-vs-concurrency.png",
    "followings": "sql-vs-redis.png",
}
ROLES = ("light_user", "median_user", "heavy_user")
ROLE_NAMES = {"light_user": "light", "median_user": "median", "heavy_user": "heavy", "celebrity": "celebrity"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def git_revision() -> str:
    def git(*args: str) -> str:
        result = subprocess.run(  # noqa: S603
            ["git", *args],  # noqa: S607
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine(versions: dict[str, str]) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        "os": _os_name(),
        **versions,
        "git": git_revision(),
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


# --- targets ---------------------------------------------------------------------------------------------


def _cpu_table(results: dict[str, Any], out: Callable[[str], None]) -> None:
    """Server CPU per request by tier, from the same runs (/proc for the API workers and the database's
    backends, INFO cpu for Redis): what each request costs, which a ratio to /health does not say."""
    rows: list[tuple[str, str, dict[str, float]]] = [
        (row["title"], row["server"], row["cpu_us_per_request"])
        for row in results["endpoints"]
        if "cpu_us_per_request" in row
    ]
    writes = results.get("write_cpu_us_per_request")
    if writes:
        rows.append(("clock-ins and clock-outs", "redis", writes))
    if "write_cost" in results:
        pool_writes = results["write_cost"]["cpu_us_per_request"]
        rows.append(("writer pool: clock-ins and clock-outs", "redis", pool_writes))
    for server, part in (results.get("mixed") or {}).items():
        if "cpu_us_per_request" in part:
            rows.append(("mixed 10:1 (per request)", server, part["cpu_us_per_request"]))
    if not rows:
        return
    out("")
    out("## Server CPU per request (µs, same runs)")
    out("")
    out(
        "CPU time the API server's processes, the PostgreSQL backends of the run's database and the private "
        "redis-server spent during each run, divided by the requests it completed. The idle server's "
        "background polls (outbox, revocations) reach the same database and are included; they are a few "
        "queries a second. The outbox worker's column is 0 when it is embedded in the API processes (its "
        "CPU is then in theirs)."
    )
    out("")
    out("| endpoint | server | API | PostgreSQL | Redis | outbox worker | total |")
    out("|---|---|---:|---:|---:|---:|---:|")
    for title, server, cpu in rows:
        tiers = [cpu.get(tier, 0.0) for tier in ("api", "postgres", "redis", "worker")]
        cells = " | ".join(f"{value:,.0f}" for value in [*tiers, sum(tiers)])
        out(f"| {title} | {server} | {cells} |")


def _storage_tables(results: dict[str, Any], out: Callable[[str], None]) -> None:
    """The dataset's footprint as seeded, and what one write costs the database and the fanout."""
    sizes = results.get("storage")
    if not sizes:
        return
    out("")
    out("## Storage (the dataset as seeded, before the load)")
    out("")
    out("| PostgreSQL table | rows | heap + TOAST MB | indexes MB | bytes per row (all) |")
    out("|---|---:|---:|---:|---:|")
    for table, part in sizes["postgres"]["tables"].items():
        per_row = "-" if part["bytes_per_row"] is None else f"{part['bytes_per_row']:,.0f}"
        out(
            f"| {table} | {part['rows']:,} | {part['heap_bytes'] / 1e6:,.1f} | "
            f"{part['index_bytes'] / 1e6:,.1f} | {per_row} |"
        )
    redis = sizes["redis"]
    out("")
    out(
        f"Redis: {sum(redis['keys'].values()):,} keys, used_memory {redis['used_memory'] / 1e6:,.1f} MB "
        f"(sampled sizes times key counts account for 1/{redis['overhead_factor']} of it)."
    )
    out("")
    out("| Redis key kind | keys | bytes per key | per | bytes per unit |")
    out("|---|---:|---:|---|---:|")
    for kind, part in redis["kinds"].items():
        out(
            f"| {kind} | {redis['keys'].get(kind, 0):,} | {part['bytes_per_key']:,.0f} | {part['unit']} | "
            f"{part['bytes_per_unit']:,.1f} |"
        )
    reach = sizes["fanout_reach"]
    out("")
    out(
        f"Fanout reach over the last day's {reach['clock_outs_last_day']:,} clock-outs: "
        f"{reach['entries_per_clock_out']:g} timelines per clock-out (followers active within 7 days, "
        f"none for a celebrity), of {reach['followers_per_clock_out']:g} followers."
    )
    write = results.get("write_cost")
    if write:
        fanout = write["fanout"]
        out("")
        out(
            f"Writer pool ({write['writers']} active users, {write['requests']} clock-ins and clock-outs): "
            f"{write['rows_per_request']:g} rows and {write['wal_bytes_per_request']:,} WAL bytes per "
            f"request ({write['other_databases_commits']} commits elsewhere on the server meanwhile); "
            f"{fanout['entries_per_clock_out']} timeline entries per clock-out."
        )


def _endpoint(results: dict[str, Any], server: str, name: str) -> dict[str, Any] | None:
    return next(
        (row for row in results["endpoints"] if row["server"] == server and row["name"] == name),
        None,
    )


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 4's targets, each with the measured ratio and PASS or MISS."""
    health = _endpoint(results, "redis", "health")
    heavy_redis = _endpoint(results, "redis", "feed heavy p1")
    light_redis = _endpoint(results, "redis", "feed light p1")
    heavy_sql = _endpoint(results, "sql", "feed heavy p1")
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, higher_is_better: bool, detail: str) -> None:
        ok = value is not None and (value >= limit if higher_is_better else value <= limit)
        rows.append(
            {
                "target": name,
                "value": None if value is None else round(value, 3),
                "limit": limit,
                "comparison": ">=" if higher_is_better else "<=",
                "pass": ok,
                "detail": detail,
            }
        )

    def rps(row: dict[str, Any] | None) -> float | None:
        return row["rps"] if row else None

    def p50(row: dict[str, Any] | None) -> float | None:
        return row["latency_ms"]["p50"] if row else None

    add(
        "Redis heavy feed throughput / Redis /health throughput",
        _ratio(rps(heavy_redis), rps(health)),
        0.5,
        True,
        f"{_num(rps(heavy_redis))} vs {_num(rps(health))} rps",
    )
    add(
        "Redis light feed throughput / Redis /health throughput",
        _ratio(rps(light_redis), rps(health)),
        0.5,
        True,
        f"{_num(rps(light_redis))} vs {_num(rps(health))} rps",
    )
    # Profiles and lists, on each server against its own /health (the SQL server has no Redis to cache with).
    for server in ("redis", "sql"):
        own_health = _endpoint(results, server, "health")
        for name, title, limit in (
            ("me", "GET /users/me", 0.4),
            ("user", "GET /users/{id}", 0.25),
            ("followers", "GET /users/{id}/followers", 0.25),
            ("followings", "GET /users/{id}/followings", 0.25),
        ):
            row = _endpoint(results, server, name)
            if row is None:
                continue
            add(
                f"{title} throughput / /health throughput ({'SQL' if server == 'sql' else 'Redis'} path)",
                _ratio(rps(row), rps(own_health)),
                limit,
                True,
                f"{_num(rps(row))} vs {_num(rps(own_health))} rps",
            )

    def single(row: dict[str, Any] | None) -> float | None:
        value = ((row or {}).get("single_client") or {}).get("latency_ms", {}).get("p50")
        return None if value is None else float(value)

    alone = _ratio(single(heavy_redis), single(light_redis))
    add(
        "Redis heavy feed p50 / Redis light feed p50",
        _ratio(p50(heavy_redis), p50(light_redis)),
        1.5,
        False,
        f"{_ms(p50(heavy_redis))} vs {_ms(p50(light_redis))} under wrk; one client at a time "
        f"{_ms(single(heavy_redis))} vs {_ms(single(light_redis))}"
        + ("" if alone is None else f", {alone:.2f}x"),
    )
    add(
        "Redis heavy feed throughput / SQL heavy feed throughput",
        _ratio(rps(heavy_redis), rps(heavy_sql)),
        10.0,
        True,
        f"{_num(rps(heavy_redis))} vs {_num(rps(heavy_sql))} rps",
    )
    writes = results.get("writes") or {}
    celebrity = (writes.get("celebrity") or {}).get("latency_ms", {}).get("p50")
    normal = (writes.get("normal") or {}).get("latency_ms", {}).get("p50")
    add(
        "Celebrity clock-out p50 / normal clock-out p50",
        _ratio(celebrity, normal),
        2.0,
        False,
        f"{_ms(celebrity)} vs {_ms(normal)}",
    )
    lag_ms = ((results.get("lag") or {}).get("mixed_redis") or {}).get("lag_ms", {})
    lag = lag_ms.get("p99")
    rows.append(
        {
            "target": "Fanout lag p99 during the mixed workload (Redis path), seconds",
            "value": None if lag is None else round(lag / 1000, 3),
            "limit": 1.0,
            "comparison": "<=",
            "pass": lag is not None and lag <= 1000,
            "detail": f"p50 {_ms(lag_ms.get('p50'))}, p99 {_ms(lag)}",
        }
    )
    errors = error_count(results)
    rows.append(
        {
            "target": "Errors in the whole run",
            "value": errors,
            "limit": 0,
            "comparison": "<=",
            "pass": errors == 0,
            "detail": "wrk socket/status errors, write errors, mixed-workload errors, lag probe failures",
        }
    )
    return rows


def error_count(results: dict[str, Any]) -> int:
    total = sum(row["error_total"] for row in results["endpoints"])
    total += sum(row["error_total"] for row in results.get("sweep", []))
    total += sum(part.get("errors", 0) for part in (results.get("writes") or {}).values())
    for part in (results.get("lag") or {}).values():
        total += part.get("errors", 0) + part.get("timeouts", 0)
    total += sum(part.get("error_total", 0) for part in (results.get("mixed") or {}).values())
    return int(total)


# --- Markdown --------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} ms" if value < 100 else f"{value:,.0f} ms"


def _cell_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def markdown(results: dict[str, Any], charts: dict[str, str]) -> str:
    meta, data = results["meta"], results["dataset"]
    mach = meta["machine"]
    wrk = results["settings"]
    lines: list[str] = []
    out = lines.append
    out(f"# Goodnight benchmark: profile {meta['profile']}")
    out("")
    out(
        f"One run of `bench/run.py`, {meta['started_at']} to {meta['finished_at']} (UTC): every figure below "
        "comes from this run, on this machine, so the ratios compare like with like. The load generators "
        "(wrk, the harness) run on the same machine as the service, PostgreSQL and Redis."
    )
    if meta["profile"] not in ("M", "L"):
        out("")
        out(
            f"> Profile {meta['profile']} is smaller than the targets ask for (profile M or larger): "
            "the PASS/MISS lines are indicative only."
        )
    out("")
    out("## Targets (issue 4)")
    out("")
    for row in results["targets"]:
        verdict = "PASS" if row["pass"] else "MISS"
        value = "-" if row["value"] is None else f"{row['value']:g}"
        limit = f"target {row['comparison']} {row['limit']:g}"
        out(f"- **{verdict}** {row['target']}: {value} ({limit}; {row['detail']})")
    out("")
    out("## Machine")
    out("")
    out("| | |")
    out("|---|---|")
    out(f"| CPU | {mach['cpu_model']} |")
    out(f"| nproc | {mach['nproc']} |")
    out(f"| Memory | {mach['memory_gib']} GiB |")
    out(f"| OS / kernel | {mach['os']} / {mach['kernel']} |")
    out(f"| PostgreSQL | {mach['postgresql']} (127.0.0.1:5432, shared with other work) |")
    out(f"| Redis | {mach['redis']} (a private redis-server on a spare port) |")
    out(f"| Python | {mach['python']} |")
    out(f"| wrk | {mach['wrk']} |")
    out(f"| goodnight | {mach['goodnight']}, git {mach['git']} |")
    logged = meta.get("server_error_log_lines") or {}
    if logged:
        errors = ", ".join(f"{name} {count}" for name, count in logged.items())
        out(f"| Server log lines at level error | {errors} |")
    load = meta["load_average"]
    out(f"| Load average (1 min) at start / end | {load['start']:.2f} / {load['end']:.2f} |")
    out("")
    out("## Dataset")
    out("")
    summary = data["summary"]
    seeding = data.get("seed_seconds")
    if data["reused"]:
        how = "reused from the cache" + (f" (seeding it took {seeding:.0f} s)" if seeding else "")
        how += f", this run's copy made in {data['prepare_seconds']:.0f} s"
    else:
        how = "seeded for this run" + (f" in {seeding:.0f} s" if seeding else "")
    out(
        f"Profile {meta['profile']}: {summary['users']:,} users, {summary['follows']:,} follows, "
        f"{summary['sleep_records']:,} sleep records ({summary.get('records_in_window', 0):,} in the 7-day "
        f"window), celebrity threshold {data['celebrity_threshold']:,} followers; {how}. "
        f"Anchored at {summary.get('anchor', '?')}."
    )
    out("")
    out("| role | user | followings | followers | feed items (7 days) |")
    out("|---|---|---:|---:|---:|")
    for role, person in data["people"].items():
        items = person.get("feed_items")
        out(
            f"| {role} | {person['username']} | {person['followings']:,} | {person['followers']:,} | "
            f"{'-' if items is None else f'{items:,}'} |"
        )
    out("")
    worker = (
        "the Redis server's outbox drained by a `goodnight worker` process of its own"
        if wrk.get("outbox_worker") == "process"
        else "embedded outbox worker on"
    )
    out(
        f"Servers: `goodnight serve --workers {wrk['workers']}`, one without `GOODNIGHT_REDIS_URL` "
        "(SQL path) and one with it (Redis path), both on the same database, "
        f"`GOODNIGHT_ENV=production` (JSON logs, one line per request), {worker}."
    )
    out("")
    out(f"## Reads (wrk -t{wrk['threads']} -c{wrk['connections']} -d{wrk['duration_s']:g}s; latency in ms)")
    out("")
    out(
        "The last two columns time the same request from a single client, one request at a time, after the "
        "wrk run: what one request costs on an otherwise idle server."
    )
    out("")
    columns = ["endpoint", "server", "rps", "x /health", "p50", "p90", "p99", "max", "errors"]
    columns += ["1 client p50", "1 client p99"]
    out("| " + " | ".join(columns) + " |")
    out("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ceilings = {row["server"]: row["rps"] for row in results["endpoints"] if row["name"] == "health"}
    for row in results["endpoints"]:
        latency = row["latency_ms"]
        single = (row.get("single_client") or {}).get("latency_ms") or {}
        ratio = _ratio(row["rps"], ceilings.get(row["server"]))
        out(
            f"| {row['title']} | {row['server']} | {_num(row['rps'])} | "
            f"{'-' if ratio is None else f'{ratio:.2f}'} | {_cell_ms(latency['p50'])} | "
            f"{_cell_ms(latency['p90'])} | {_cell_ms(latency['p99'])} | {_cell_ms(latency['max'])} | "
            f"{row['error_total']} | {_cell_ms(single.get('p50'))} | {_cell_ms(single.get('p99'))} |"
        )
    _cpu_table(results, out)
    _storage_tables(results, out)
    out("")
    out("## SQL vs Redis by followings (feed, same wrk settings)")
    out("")
    out("| user | followings | page | SQL rps | Redis rps | Redis / SQL | SQL p50 ms | Redis p50 ms |")
    out("|---|---:|---|---:|---:|---:|---:|---:|")
    for role in ROLES:
        for page in ("p1", "deep"):
            sql_row = _endpoint(results, "sql", f"feed {ROLE_NAMES[role]} {page}")
            redis_row = _endpoint(results, "redis", f"feed {ROLE_NAMES[role]} {page}")
            if sql_row is None or redis_row is None:
                continue
            ratio = _ratio(redis_row["rps"], sql_row["rps"])
            label = "1" if page == "p1" else str(redis_row.get("page", "deep"))
            out(
                f"| {ROLE_NAMES[role]} | {data['people'][role]['followings']:,} | {label} | "
                f"{_num(sql_row['rps'])} | {_num(redis_row['rps'])} | "
                f"{'-' if ratio is None else f'{ratio:.1f}x'} | {_cell_ms(sql_row['latency_ms']['p50'])} | "
                f"{_cell_ms(redis_row['latency_ms']['p50'])} |"
            )
    if results.get("sweep"):
        out("")
        out(f"## Throughput vs concurrency (wrk -d{wrk['sweep_duration_s']:g}s; rps, p99 ms in brackets)")
        out("")
        labels = list(dict.fromkeys(row["label"] for row in results["sweep"]))
        levels = sorted({row["connections"] for row in results["sweep"]})
        out("| connections | " + " | ".join(labels) + " |")
        out("|---:|" + "---:|" * len(labels))
        for level in levels:
            cells = []
            for label in labels:
                row = next(
                    (r for r in results["sweep"] if r["label"] == label and r["connections"] == level), None
                )
                cells.append(
                    "-" if row is None else f"{_num(row['rps'])} ({_cell_ms(row['latency_ms']['p99'])})"
                )
            out(f"| {level} | " + " | ".join(cells) + " |")
    writes = results.get("writes")
    if writes:
        out("")
        out("## Clock-out latency (Redis path; sequential, the two users taking turns; ms)")
        out("")
        out("| user | followers | samples | p50 | p90 | p99 | max | errors |")
        out("|---|---:|---:|---:|---:|---:|---:|---:|")
        for label, part in writes.items():
            latency = part["latency_ms"]
            out(
                f"| {label} ({part['username']}) | {part['followers']:,} | {latency['count']} | "
                f"{_cell_ms(latency['p50'])} | {_cell_ms(latency['p90'])} | {_cell_ms(latency['p99'])} | "
                f"{_cell_ms(latency['max'])} | {part['errors']} |"
            )
    lag = results.get("lag")
    if lag:
        out("")
        author = results["lag_setup"]
        out(
            f"## Fanout lag (clock-out by {author['author']} with {author['author_followers']:,} followers → "
            f"first item of {author['reader']}'s feed; ms)"
        )
        out("")
        out(
            "Measured from the clock-out's response (the write is committed) to the first poll of the "
            f"follower's feed (`per_page=1`, every {author['poll_interval_ms']:g} ms) that shows the record. "
            f"During the mixed workload one probe starts every {wrk.get('lag_gap_s', 0.5):g} s."
        )
        out("")
        out("| when | server | samples | p50 | p90 | p99 | max | timeouts | errors |")
        out("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        names = {
            "idle": ("idle", "redis"),
            "mixed_redis": ("during mixed", "redis"),
            "mixed_sql": ("during mixed", "sql"),
        }
        for key, part in lag.items():
            when, server = names.get(key, (key, "?"))
            latency = part["lag_ms"]
            out(
                f"| {when} | {server} | {part['samples']} | {_cell_ms(latency['p50'])} | "
                f"{_cell_ms(latency['p90'])} | {_cell_ms(latency['p99'])} | {_cell_ms(latency['max'])} | "
                f"{part['timeouts']} | {part['errors']} |"
            )
    mixed = results.get("mixed")
    if mixed:
        out("")
        first = next(iter(mixed.values()))
        out(
            f"## Mixed workload ({first['reads_per_write']}:1 read:write, open loop at a fixed rate, "
            f"{first['duration_s']:g} s)"
        )
        out("")
        sources = {name: part.get("rate_source", "--mixed-rate") for name, part in mixed.items()}
        rates = "; ".join(f"{name}: {source}" for name, source in sources.items())
        out(f"Rate, per server: {rates}.")
        waits = [
            f"{name} {part['outbox_drain_wait_s']:g} s"
            for name, part in mixed.items()
            if "outbox_drain_wait_s" in part
        ]
        if waits:
            out(
                "Each server's mix (calibration included) starts once its outbox is empty, the lag probes' "
                f"fanout drained (waited: {', '.join(waits)})."
            )
        out("")
        out(
            "Reads are page 1 of the feed of one of "
            f"{first['readers']} active users; writes are clock-ins and clock-outs by {first['writers']} "
            "other active users, in turn. Latency counts from when each request was due, so queueing "
            "behind a slow server is included; service time counts from when it was sent."
        )
        out("")
        out(
            "| server | target rps | achieved rps | requests | errors | p50 | p90 | p99 | service p50 | "
            "service p99 | reads p99 | writes p99 | max outbox backlog |"
        )
        out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for server, part in mixed.items():
            latency, service = part["latency_ms"], part["service_ms"]
            backlog = part.get("outbox_backlog") or {}
            pending = backlog.get("max_pending")
            age = backlog.get("max_oldest_age_s")
            backlog_text = "-" if pending is None else f"{pending} ({(age or 0):.2f} s)"
            out(
                f"| {server} | {_num(part['target_rps'])} | {_num(part['achieved_rps'])} | "
                f"{part['completed']:,} | {part['error_total']} | {_cell_ms(latency['p50'])} | "
                f"{_cell_ms(latency['p90'])} | {_cell_ms(latency['p99'])} | {_cell_ms(service['p50'])} | "
                f"{_cell_ms(service['p99'])} | {_cell_ms(part['read_latency_ms']['p99'])} | "
                f"{_cell_ms(part['write_latency_ms']['p99'])} | {backlog_text} |"
            )
    if charts:
        out("")
        out("## Charts")
        out("")
        for name in charts.values():
            out(f"![{name}]({name})")
            out("")
    out("")
    out("## Commands")
    out("")
    out("The whole run (from the repository root):")
    out("")
    out("```sh")
    out(meta["command"])
    out("```")
    out("")
    out("Dataset (`goodnight seed`, run by the harness):")
    out("")
    out("```sh")
    out(data["seed_command"])
    out("```")
    out("")
    out("Servers:")
    out("")
    out("```sh")
    for server in results["servers"].values():
        out(server["command"])
    out("```")
    out("")
    out("wrk runs, in the order they ran:")
    out("")
    out("```sh")
    for row in results["endpoints"] + results.get("sweep", []):
        out(row["command"])
    out("```")
    out("")
    return "\n".join(lines)


# --- charts ----------------------------------------------------------------------------------------------


def charts_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw_charts(results: dict[str, Any], folder: Path) -> dict[str, str]:
    """Write the PNG charts; returns {kind: file name}. Needs matplotlib (the ``bench`` dependency group)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, str] = {}

    # 1. Latency percentiles per endpoint, SQL and Redis side by side.
    endpoints = results["endpoints"]
    titles = list(dict.fromkeys(row["title"] for row in endpoints))
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    for axis, server in zip(axes, ("sql", "redis"), strict=True):
        rows = {row["title"]: row for row in endpoints if row["server"] == server}
        positions = range(len(titles))
        width = 0.27
        for offset, (name, color) in enumerate((("p50", "#4c72b0"), ("p90", "#dd8452"), ("p99", "#c44e52"))):
            values = [rows[title]["latency_ms"][name] if title in rows else 0 for title in titles]
            axis.bar([p + (offset - 1) * width for p in positions], values, width, label=name, color=color)
        axis.set_xticks(list(positions))
        axis.set_xticklabels(titles, rotation=40, ha="right", fontsize=8)
        axis.set_yscale("log")
        axis.set_title(f"{server.upper()} path")
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("latency, ms (log scale)")
    axes[1].legend()
    figure.suptitle(
        f"Latency percentiles per endpoint (wrk -c{results['settings']['connections']}), "
        f"profile {results['meta']['profile']}"
    )
    figure.tight_layout()
    figure.savefig(folder / CHARTS["latency"], dpi=110)
    plt.close(figure)
    written["latency"] = CHARTS["latency"]

    # 2. Throughput vs concurrency.
    sweep = results.get("sweep") or []
    if sweep:
        figure, axis = plt.subplots(figsize=(8, 5))
        for label in dict.fromkeys(row["label"] for row in sweep):
            series = sorted(
                (row for row in sweep if row["label"] == label), key=lambda row: row["connections"]
            )
            axis.plot(
                [row["connections"] for row in series],
                [row["rps"] for row in series],
                marker="o",
                label=label,
            )
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted({row["connections"] for row in sweep}))
        axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_xlabel("wrk connections")
        axis.set_yscale("log")
        axis.set_ylabel("requests per second (log scale)")
        axis.set_title(f"Throughput vs concurrency, profile {results['meta']['profile']}")
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        figure.savefig(folder / CHARTS["concurrency"], dpi=110)
        plt.close(figure)
        written["concurrency"] = CHARTS["concurrency"]

    # 3. SQL vs Redis by followings count.
    people = results["dataset"]["people"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    for page, style in (("p1", "-"), ("deep", "--")):
        for server, color in (("sql", "#c44e52"), ("redis", "#4c72b0")):
            xs, rps, p50 = [], [], []
            for role in ROLES:
                row = _endpoint(results, server, f"feed {ROLE_NAMES[role]} {page}")
                if row is None:
                    continue
                xs.append(max(1, people[role]["followings"]))
                rps.append(row["rps"])
                p50.append(row["latency_ms"]["p50"])
            label = f"{server.upper()} {'page 1' if page == 'p1' else 'deep page'}"
            axes[0].plot(xs, rps, style, marker="o", color=color, label=label)
            axes[1].plot(xs, p50, style, marker="o", color=color, label=label)
    for axis in axes:
        axis.set_xscale("log")
        axis.set_xlabel("followings of the reader (log scale)")
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_ylabel("requests per second")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("p50 latency, ms")
    axes[1].set_yscale("log")
    figure.suptitle(f"Feed: SQL vs Redis by followings, profile {results['meta']['profile']}")
    figure.tight_layout()
    figure.savefig(folder / CHARTS["followings"], dpi=110)
    plt.close(figure)
    written["followings"] = CHARTS["followings"]
    return written


def write_outputs(results: dict[str, Any], folder: Path, *, charts: bool) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, str] = {}
    if charts:
        if charts_available():
            drawn = draw_charts(results, folder)
        else:
            print(
                "note: matplotlib is not installed, so no charts were drawn "
                "(install the bench group: python3 -m uv sync --group bench)"
            )
    for name in CHARTS.values():  # no chart from an earlier run may sit beside these results
        if name not in drawn.values():
            (folder / name).unlink(missing_ok=True)
    results["charts"] = drawn
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "results.md").write_text(markdown(results, drawn))
    return drawn
