"""``goodnight worker`` processes for tests: started in their own session, always ended by their pid."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import goodnight_command

STOP_TIMEOUT_S = 15.0


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, leases are left to run out."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def terminate(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"goodnight worker ignored SIGTERM:\n{self.log()}") from None


@contextmanager
def worker_process(
    cwd: Path, env: Mapping[str, str], *args: str, log_name: str = "worker.log"
) -> Iterator[WorkerProcess]:
    """``goodnight worker`` for the duration of the block; killed afterwards if still running."""
    log_path = cwd / log_name
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*goodnight_command(), "worker", *args],
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProcess(process, log_path)
    try:
        yield worker
    finally:
        with suppress(ProcessLookupError, subprocess.TimeoutExpired):
            worker.kill()
