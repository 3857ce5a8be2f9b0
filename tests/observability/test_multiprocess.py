"""The metric files of several processes: a private folder only for several workers, and the live gauges of
a process that died without a word leave the sums when the next one starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from goodnight.observability.multiprocess import ENV_VAR, use_private_directory

# Above the kernel's largest pid (2^22): never a running process.
DEAD_PID = 4_194_999


def test_one_worker_counts_in_memory_and_an_operators_folder_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert use_private_directory(1) is None
    assert ENV_VAR not in os.environ
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert use_private_directory(4) is None
    assert os.environ[ENV_VAR] == str(tmp_path)


def test_several_workers_get_a_fresh_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    directory = use_private_directory(2)
    try:
        assert directory is not None
        assert os.environ[ENV_VAR] == str(directory)
        assert directory.is_dir()
        assert not list(directory.iterdir())
    finally:
        os.environ.pop(ENV_VAR, None)  # set by the code under test, not through monkeypatch: undo by hand
        if directory is not None:
            directory.rmdir()


def test_a_dead_processs_live_gauges_are_dropped_and_its_counts_kept(tmp_path: Path) -> None:
    alive = os.getpid()
    planted = [
        f"gauge_livesum_{DEAD_PID}.db",
        f"gauge_livemax_{DEAD_PID}.db",
        f"counter_{DEAD_PID}.db",
        f"histogram_{DEAD_PID}.db",
        f"gauge_livesum_{alive}.db",
    ]
    for name in planted:
        (tmp_path / name).touch()
    # Multiprocess mode is chosen when prometheus-client is imported: it takes a process of its own.
    script = "from goodnight.observability.multiprocess import forget_dead_processes; forget_dead_processes()"
    env = {**os.environ, ENV_VAR: str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    left = {path.name for path in tmp_path.iterdir()}
    assert left == {f"counter_{DEAD_PID}.db", f"histogram_{DEAD_PID}.db", f"gauge_livesum_{alive}.db"}
