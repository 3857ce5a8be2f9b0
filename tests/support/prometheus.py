"""A real Prometheus server for tests (Debian's ``prometheus`` package): our own config, storage in a
temporary folder, a spare port, stopped by its process id."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.processes import free_port

STARTUP_TIMEOUT_S = 30.0


class PrometheusMissing(AssertionError):
    """The test needs Debian's prometheus package (scripts/services installs it); it fails, never skips."""


class Prometheus:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus was not ready within {STARTUP_TIMEOUT_S:.0f}s:\n{self.log()}")

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=5.0)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expression: str) -> float | None:
        """The single value an expression yields, or None while it yields nothing."""
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def scrape_job(name: str, port: int, token: str | None = None) -> dict[str, Any]:
    job: dict[str, Any] = {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
    if token is not None:
        job["authorization"] = {"type": "Bearer", "credentials": token}
    return job


@contextmanager
def prometheus(folder: Path, jobs: list[Mapping[str, Any]], interval: str = "1s") -> Iterator[Prometheus]:
    """Prometheus scraping ``jobs`` every ``interval`` for the duration of the block."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusMissing(
            "prometheus is not installed: apt-get install -y prometheus (scripts/services)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    settings = {"global": {"scrape_interval": interval, "scrape_timeout": interval}, "scrape_configs": jobs}
    config.write_text(yaml.safe_dump(settings))
    port = free_port()
    log_path = folder / "prometheus.log"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Prometheus(process, port, log_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
