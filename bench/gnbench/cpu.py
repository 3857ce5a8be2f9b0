"""CPU time per request, per tier: the API server's processes, the PostgreSQL backends serving the run's
database, the private redis-server, and the outbox worker when it runs in a process of its own.

Throughput ratios reward only what one endpoint saves over another; CPU seconds per request say what each
request costs each tier, which is what capacity is planned from. Read from /proc (and Redis's own INFO), so
the figures cover exactly the processes serving the run, whatever else the machine is doing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gnbench.infra import HarnessError, OutboxWorker, Postgres, RedisServer, Server

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TIERS = ("api", "postgres", "redis", "worker")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far; 0 when it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name is in parentheses and may hold spaces: the fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)


def session_pids(leader: int) -> list[int]:
    """Every live process in ``leader``'s session: a server started in its own session, and its workers."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == leader:  # the session id (field 6 of stat)
            found.append(int(entry.name))
    return found


@dataclass(frozen=True)
class Reading:
    """Cumulative CPU seconds: per process for the API server, the database backends and the outbox worker,
    in all for Redis."""

    api: dict[int, float]
    postgres: dict[int, float]
    redis: float
    worker: dict[int, float]


@dataclass
class CpuMeter:
    """Reads cumulative CPU seconds per tier for one server; two readings give an interval's cost."""

    server: Server
    postgres: Postgres
    database: str
    redis: RedisServer | None
    worker: OutboxWorker | None = None

    def read(self) -> Reading:
        api = _session_cpu(self.server)
        worker = {} if self.worker is None else _session_cpu(self.worker)
        backends = self.postgres.rows(
            "SELECT pid FROM pg_stat_activity WHERE datname = :'db' AND pid <> pg_backend_pid()",
            self.database,
            db=self.database,
        )
        postgres = {int(row[0]): process_cpu_seconds(int(row[0])) for row in backends}
        redis = 0.0
        if self.redis is not None:
            info = self.redis.info("cpu")
            redis = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return Reading(api, postgres, redis, worker)


def _session_cpu(server: Server) -> dict[int, float]:
    process = server.process
    if process is None or process.popen is None:
        raise HarnessError(f"{server.name} is not running")
    return {pid: process_cpu_seconds(pid) for pid in session_pids(process.popen.pid)}


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    # A process that appeared in between (a new database connection) counts from zero; one that went away
    # is not counted.
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def per_request_us(before: Reading, after: Reading, requests: int) -> dict[str, float]:
    """CPU microseconds per request for each tier between two readings (``worker`` is 0 when the outbox
    worker is embedded in the API processes: its CPU is then in ``api``)."""
    spent = {
        "api": _spent(before.api, after.api),
        "postgres": _spent(before.postgres, after.postgres),
        "redis": after.redis - before.redis,
        "worker": _spent(before.worker, after.worker),
    }
    return {tier: round(seconds / requests * 1e6, 1) if requests else 0.0 for tier, seconds in spent.items()}
