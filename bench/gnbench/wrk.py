"""Throughput runs with wrk and the Lua scripts in bench/: one JSON summary line per run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gnbench.infra import REPO, HarnessError, command_line, free_port

BENCH = REPO / "bench"
MARKER = "GN_BENCH_JSON "


def wrk_version() -> str:
    path = shutil.which("wrk")
    if path is None:
        return "missing"
    result = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)  # noqa: S603
    first = (result.stdout or result.stderr).splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise HarnessError("wrk is not installed: apt-get install -y wrk")
    return path


@dataclass
class WrkRun:
    label: str
    url: str
    script: str
    connections: int
    threads: int
    duration_s: float
    env: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        threads = min(self.threads, self.connections)
        return [
            "wrk",
            f"-t{threads}",
            f"-c{self.connections}",
            f"-d{max(1, round(self.duration_s))}s",
            "--timeout",
            "10s",
            "-s",
            f"bench/{self.script}",
            self.url,
        ]

    @property
    def command(self) -> str:
        return command_line(self.argv(), self.env)


def run(spec: WrkRun) -> dict[str, Any]:
    """Run wrk once; returns rps, latency percentiles in ms, errors, and the exact command."""
    binary = require_wrk()
    env = {**os.environ, "GN_BENCH_DIR": str(BENCH), **spec.env}
    argv = [binary, *spec.argv()[1:]]
    result = subprocess.run(  # noqa: S603
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=spec.duration_s + 60, check=False
    )
    line = next((row for row in result.stdout.splitlines() if row.startswith(MARKER)), None)
    if result.returncode != 0 or line is None:
        raise HarnessError(f"wrk failed ({spec.command}):\n{result.stdout}\n{result.stderr}")
    raw = json.loads(line[len(MARKER) :])
    seconds = raw["duration_us"] / 1e6
    latency = {name: round(value / 1000, 3) for name, value in raw["latency_us"].items()}
    errors = raw["errors"]
    return {
        "label": spec.label,
        "url": spec.url,
        "connections": spec.connections,
        "threads": min(spec.threads, spec.connections),
        "duration_s": round(seconds, 3),
        "requests": raw["requests"],
        "rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "latency_ms": latency,
        "errors": errors,
        "error_total": sum(errors.values()),
        "command": spec.command,
    }


def self_check() -> None:
    """Fail early if wrk cannot run the scripts (missing binary or a Lua error)."""
    require_wrk()
    port = free_port()
    spec = WrkRun("self-check", f"http://127.0.0.1:{port}/", "wrk_plain.lua", 1, 1, 1)
    argv = [require_wrk(), *spec.argv()[1:]]
    env = {**os.environ, "GN_BENCH_DIR": str(BENCH)}
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    if MARKER not in result.stdout:
        raise HarnessError(f"wrk could not run bench/wrk_plain.lua:\n{result.stdout}\n{result.stderr}")


def scripts_dir() -> Path:
    return BENCH
