"""Watching a real ``goodnight serve`` under load: its workers' memory, and database connections parked
inside a transaction."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.databases import POSTGRES_ADMIN_URL, TestDatabase
from tests.support.processes import Server


def worker_pids(server: Server) -> list[int]:
    """The worker processes of ``goodnight serve --workers N``: the server's children uvicorn spawned."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == server.process.pid and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                pids.append(int(stat.parent.name))
    return pids


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def reset_peak_memory(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from VmRSS


# Longer than this idle inside a transaction, a connection is parked there (a request holding it while it
# waits for something else), not caught between two statements by the sampler.
PARKED_SECONDS = 1.0
IDLE_IN_TRANSACTION = sa.text(
    """
    SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%'),
           count(*) FILTER (WHERE state LIKE 'idle in transaction%'
                            AND clock_timestamp() - state_change > make_interval(secs => :parked))
    FROM pg_stat_activity WHERE datname = :database
    """
)


class IdleTransactions:
    """Counts one database's connections idle inside a transaction (all of them, and the parked ones)."""

    def __init__(self, database: TestDatabase) -> None:
        self.database = make_url(database.url).database
        self.engine = create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")

    async def count(self) -> tuple[int, int]:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                IDLE_IN_TRANSACTION, {"database": self.database, "parked": PARKED_SECONDS}
            )
            idle, parked = result.one()
        return int(idle), int(parked)

    async def watch(self, stop: asyncio.Event) -> list[tuple[int, int]]:
        samples = []
        while not stop.is_set():
            samples.append(await self.count())
            await asyncio.sleep(0.05)
        return samples

    async def close(self) -> None:
        await self.engine.dispose()
