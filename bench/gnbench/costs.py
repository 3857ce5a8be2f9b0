"""The per-operation costs a run measured, in the shape ``bench/capacity.py`` reads: CPU per request on each
tier, database rows and WAL per write, timelines reached per clock-out, bytes per row and per Redis entry.

``costs.json`` is derived from ``results.json`` and nothing else, so it can be rebuilt from any run's results
(from bench/: ``python -m gnbench.costs results.json costs.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gnbench.workloads import Mix

# The read the model counts: page 1 of a typical (the median) user's feed, or of whichever feed was measured.
READS = ("feed median p1", "feed light p1", "feed heavy p1")
SIGNED_IN = "me"  # the cheapest signed-in read (GET /users/me), for comparison


def extract(results: dict[str, Any]) -> dict[str, Any]:
    endpoints = {(row["server"], row["name"]): row for row in results["endpoints"]}
    meta, dataset = results["meta"], results["dataset"]
    write = results["write_cost"]
    sizes = results["storage"]
    tables = sizes["postgres"]["tables"]
    redis = sizes["redis"]
    kinds = redis["kinds"]
    mixed = results.get("mixed") or {}
    # The lag probe beside the Redis mix: its clock-outs, deletions and polls are in that run's figures.
    lag = (results.get("lag") or {}).get("mixed_redis", {}).get("lag_ms") or {}
    return {
        "source": {
            "profile": meta["profile"],
            "command": meta["command"],
            "started_at": meta["started_at"],
            "git": meta["machine"].get("git"),
            "nproc": meta["machine"]["nproc"],
            "cpu_model": meta["machine"]["cpu_model"],
            "api_workers": results["settings"]["workers"],
            "outbox_worker": results["settings"].get("outbox_worker", "embedded"),
        },
        "dataset": {
            **{key: dataset["summary"][key] for key in ("users", "follows", "sleep_records", "active_users")},
            "records_in_window": dataset["summary"]["records_in_window"],
            "celebrity_threshold": dataset["celebrity_threshold"],
        },
        "cpu_us": {
            "feed_page_redis": _read(endpoints, "redis"),
            "feed_page_sql": _read(endpoints, "sql"),
            "signed_in_read": endpoints[("redis", SIGNED_IN)]["cpu_us_per_request"],
            "write": write["cpu_us_per_request"],
            **{f"mixed_{name}": part["cpu_us_per_request"] for name, part in mixed.items()},
        },
        "mixed": {
            name: {
                "reads_per_write": part.get("reads_per_write", Mix.reads_per_write),
                "capacity_rps": part.get("capacity_rps"),
                "target_rps": part.get("target_rps"),
                **{key: part.get(key) for key in ("completed", "reads", "writes")},
                # Beside the mix, the fanout-lag probe clocks out every --lag-gap seconds, as an author whose
                # clock-out reaches thousands of timelines: its fanout is in these counts and in the CPU.
                "fanout": part.get("fanout"),
            }
            for name, part in mixed.items()
        },
        "lag_probe": {
            "samples": lag.get("count", 0),
            "mean_lag_ms": lag.get("mean", 0.0),
            "poll_interval_ms": results["lag_setup"]["poll_interval_ms"],
            "author_followers": results["lag_setup"]["author_followers"],
        },
        "writes": {key: write[key] for key in ("requests", "rows_per_request", "wal_bytes_per_request")}
        | {"other_databases_commits_meanwhile": write["other_databases_commits"]},
        "fanout": {
            "entries_per_clock_out_dataset": sizes["fanout_reach"]["entries_per_clock_out"],
            "followers_per_clock_out_dataset": sizes["fanout_reach"]["followers_per_clock_out"],
            "entries_per_clock_out_writers": write["fanout"]["entries_per_clock_out"],
        },
        "postgres": {
            "bytes_per_user": tables["users"]["bytes_per_row"],
            "bytes_per_follow": tables["follows"]["bytes_per_row"],
            "bytes_per_record": tables["sleep_records"]["bytes_per_row"],
            "tables": tables,
            "database_bytes": sizes["postgres"]["database_bytes"],
        },
        "redis": {
            "bytes_per_timeline_entry": kinds["timeline_bucket"]["bytes_per_unit"],
            "bytes_per_rendering": kinds["rendering"]["bytes_per_key"],
            "bytes_per_follow_state_field": kinds["follow_state"]["bytes_per_unit"],
            "bytes_per_follow_state_key": kinds["follow_state"]["bytes_per_key"],
            "bytes_per_warm_marker": kinds["warm_marker"]["bytes_per_key"],
            "overhead_factor": redis["overhead_factor"],
            "used_memory": redis["used_memory"],
            "keys": redis["keys"],
            "timeline_entries": kinds["timeline_bucket"]["estimated_units"],
            "follow_state_fields": kinds["follow_state"]["estimated_units"],
        },
    }


def _read(endpoints: dict[tuple[str, str], dict[str, Any]], server: str) -> dict[str, Any]:
    name = next(name for name in READS if (server, name) in endpoints)
    return dict(endpoints[(server, name)]["cpu_us_per_request"], endpoint=name)


def write(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(extract(results), indent=2, sort_keys=False) + "\n")


if __name__ == "__main__":
    write(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
