"""Smoke test of the load harness: ``bench/run.py`` for a few seconds against a tiny dataset.

It runs the real thing end to end (goodnight seed, a private redis-server, two ``goodnight serve`` processes,
wrk, the harness's own workloads) and checks that the results are written and make sense. It measures
nothing worth keeping: the benchmark itself is not part of the test suite. Charts are not requested, so the
test needs no matplotlib.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


pytestmark = [pytest.mark.slow]


@pytest.fixture(autouse=True)
def _tools_and_servers() -> None:
    # Fail loudly, never skip: scripts/services installs wrk and starts PostgreSQL when they are missing.
    missing = [tool for tool in ("wrk", "redis-server", "psql") if shutil.which(tool) is None]
    assert not missing, f"the benchmark harness needs {', '.join(missing)} (scripts/services installs wrk)"
    assert _answers(5432), "PostgreSQL is not answering on 127.0.0.1:5432"


def _databases(prefix: str) -> list[str]:
    result = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-XAtq",
            "-c",
            "SELECT datname FROM pg_database",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in result.stdout.split() if name.startswith(prefix)]


def test_harness_runs_end_to_end_on_a_tiny_dataset(tmp_path: Path) -> None:
    prefix = f"gnbench_smoke_{uuid.uuid4().hex[:8]}"
    output = tmp_path / "out"
    argv = [
        sys.executable,
        "bench/run.py",
        "--profile=tiny",
        "--no-cache",
        f"--db-prefix={prefix}",
        "--duration=1",
        "--sweep=none",
        "--feed-users=light,heavy",
        "--single-client-requests=10",
        "--write-iterations=4",
        "--lag-samples=3",
        "--mixed-rate=40",
        "--mixed-duration=2",
        "--mixed-paths=redis",
        "--readers=6",
        "--writers=3",
        "--write-cost-rounds=2",
        "--outbox-worker=process",
        "--no-charts",
        f"--output-dir={output}",
    ]
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=150, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    results = json.loads((output / "results.json").read_text())
    assert results["meta"]["profile"] == "tiny"
    # Commands name the run's temporary files by a placeholder, never by the folder of the machine that ran.
    published = (output / "results.json").read_text() + (output / "results.md").read_text()
    assert "goodnight-bench-" not in published
    assert "<run folder>/tokens/" in published
    assert results["meta"]["machine"]["nproc"] >= 1
    assert results["dataset"]["summary"]["users"] == 400

    endpoints = {(row["server"], row["name"]): row for row in results["endpoints"]}
    for server in ("sql", "redis"):
        for name in ("health", "me", "feed light p1", "feed light deep", "feed heavy p1", "feed heavy deep"):
            row = endpoints[(server, name)]
            assert row["requests"] > 0, row
            assert row["rps"] > 0, row
            latency = row["latency_ms"]
            assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"], row
            assert row["error_total"] == 0, row
            assert row["single_client"]["latency_ms"]["count"] == 10, row
            cpu = row["cpu_us_per_request"]
            assert cpu["api"] > 0, row  # the server's workers served every request
            assert cpu["postgres"] >= 0, row
            # Redis's own housekeeping counts too, so only "a feed page from Redis costs Redis" is certain.
            assert cpu["redis"] > 0 if server == "redis" and name.startswith("feed") else cpu["redis"] >= 0
    assert endpoints[("redis", "feed light deep")]["page"] > 1
    # What the run produced, never how fast it was: two throughputs measured for a second each on a shared
    # machine may come out in either order, and the suite must not fail on noise.
    assert {tuple(sorted(row)) for row in results["endpoints"]} == {tuple(sorted(results["endpoints"][0]))}
    assert results["settings"]["rate_limits"] == "off"

    for label in ("normal", "celebrity"):
        writes = results["writes"][label]
        assert writes["errors"] == 0
        assert writes["latency_ms"]["count"] == 4
        assert writes["latency_ms"]["p50"] > 0

    for key in ("idle", "mixed_redis"):
        lag = results["lag"][key]
        assert lag["samples"] >= 1, lag
        assert lag["errors"] == 0, lag
        assert lag["timeouts"] == 0, lag
        assert 0 < lag["lag_ms"]["p50"] < 10_000

    mixed = results["mixed"]["redis"]
    assert mixed["scheduled"] == 80
    assert mixed["completed"] == 80
    assert mixed["error_total"] == 0, mixed["errors"]
    assert mixed["writes"] > 0
    assert mixed["reads"] >= 9 * mixed["writes"]
    assert mixed["achieved_rps"] > 0
    assert mixed["cpu_us_per_request"]["api"] > 0
    # A handful of writes on pooled connections can stay under one clock tick of the backends' CPU (10 ms).
    assert results["write_cpu_us_per_request"]["postgres"] >= 0

    # The outbox worker ran in a process of its own: its CPU is a tier apart, and it did the fanout.
    assert set(results["write_cpu_us_per_request"]) == {"api", "postgres", "redis", "worker"}
    write_cost = results["write_cost"]
    assert write_cost["requests"] == 2 * 2 * 3
    assert write_cost["errors"] == 0
    assert write_cost["cpu_us_per_request"]["worker"] > 0
    assert write_cost["rows_per_request"] > 0
    assert write_cost["fanout"]["clock_outs"] == 2 * 3
    assert mixed["capacity_rps"] is None  # --mixed-rate was given: no calibration
    sizes = results["storage"]
    assert sizes["postgres"]["tables"]["users"]["rows"] == 400
    assert sizes["postgres"]["tables"]["follows"]["bytes_per_row"] > 0
    assert sizes["redis"]["keys"]["timeline_bucket"] > 0
    assert sizes["redis"]["kinds"]["timeline_bucket"]["bytes_per_unit"] > 0
    assert sizes["redis"]["kinds"]["rendering"]["bytes_per_key"] > 0
    assert sizes["fanout_reach"]["clock_outs_last_day"] > 0
    costs = json.loads((output / "costs.json").read_text())
    assert costs["source"]["outbox_worker"] == "process"
    assert costs["dataset"]["users"] == 400
    assert costs["postgres"]["bytes_per_record"] > 0

    assert len(results["targets"]) == 15
    assert all(isinstance(row["pass"], bool) for row in results["targets"])
    assert results["charts"] == {}

    markdown = (output / "results.md").read_text()
    sections = ("## Targets (issue 4)", "## Machine", "## Reads", "## Server CPU per request", "## Storage")
    sections = (*sections, "## Commands")
    for section in (*sections, "## Fanout lag"):
        assert section in markdown
    assert markdown.count("**PASS**") + markdown.count("**MISS**") == 15
    assert "wrk -t2 -c32 -d1s" in markdown
    assert not list(output.glob("*.png"))

    assert _databases(prefix) == []  # the run's database is dropped afterwards


def test_a_published_cache_folder_names_the_home_directory_by_a_tilde(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    assert spec is not None
    assert spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    monkeypatch.setattr(Path, "home", lambda: Path("/home/someone"))
    assert run._home_relative("/home/someone/.cache/goodnight-bench/M") == "~/.cache/goodnight-bench/M"
    assert run._home_relative("/home/someone2/cache") == "/home/someone2/cache"
    assert run._home_relative("/srv/cache") == "/srv/cache"
    assert run._home_relative(None) is None
