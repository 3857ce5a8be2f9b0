"""Metrics over several processes: the folder prometheus-client's workers write to, and its upkeep.

``goodnight serve --workers N`` runs N processes, each with its own counters. prometheus-client's
multiprocess mode gives every process memory-mapped files in one folder (``PROMETHEUS_MULTIPROC_DIR``), and
``/metrics`` in any worker adds them all up. The variable must be set before a worker imports the client,
so ``serve`` sets it before uvicorn starts them (they inherit it). This module imports nothing of
prometheus-client at load time, so the supervisor process never picks a storage mode itself.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
# prometheus-client's file names: <type>[_<gauge mode>]_<pid>.db
_PID_OF_FILE = re.compile(r"_(\d+)\.db$")


def use_private_directory(workers: int) -> Path | None:
    """Give this process and the workers it starts a fresh, empty folder for their metric files, removed
    when this process exits (uvicorn's supervisor returns once its workers have stopped).

    Only for several workers: a single process counts in memory, which is cheaper. A folder the operator
    chose (the variable already set) is used as it is and left alone; emptying it between runs is theirs to
    do, as prometheus-client documents.
    """
    if workers < 2 or ENV_VAR in os.environ:
        return None
    directory = Path(tempfile.mkdtemp(prefix="goodnight-metrics-"))
    os.environ[ENV_VAR] = str(directory)
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def is_multiprocess() -> bool:
    """Whether this process's metrics live in the shared folder (decided when prometheus-client loaded)."""
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def forget_dead_processes() -> None:
    """Drop the live gauges of processes that died without a word (killed, crashed), so a worker that
    uvicorn restarts does not leave its predecessor's requests in flight forever. Counters stay: what a dead
    worker counted was counted."""
    if not is_multiprocess():
        return
    from prometheus_client.multiprocess import mark_process_dead

    directory = os.environ[ENV_VAR]
    pids = {int(found.group(1)) for name in os.listdir(directory) if (found := _PID_OF_FILE.search(name))}
    for pid in pids:
        if pid != os.getpid() and not _alive(pid):
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def process_exiting() -> None:
    """This process is stopping: its live gauges leave the sums."""
    if is_multiprocess():
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(os.getpid(), os.environ[ENV_VAR])  # type: ignore[no-untyped-call]
