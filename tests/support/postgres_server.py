"""A private PostgreSQL server for the tests: real PostgreSQL, on a spare port, ours to stop and start.

The shared test server must never be stopped; a test that takes the database away starts one of these.
The cluster lives in a temporary directory with trust authentication, listens on 127.0.0.1 only and runs
with fsync off (nothing here needs to survive the machine crashing). PostgreSQL refuses to run as root, so
when the tests do, its commands run as the ``postgres`` system user, who owns the directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from tests.support.redis_server import free_port

COMMAND_TIMEOUT_S = 60.0
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    # fsync off is safe for a crash of the server alone (the kernel keeps what was written); never turn
    # synchronous_commit off here: commits would be acknowledged before their WAL left shared memory, and a
    # hard stop would lose acknowledged writes.
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "50",
}


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's ``bin`` directory (Debian keeps each version apart)."""
    versions = [path for path in Path("/usr/lib/postgresql").glob("*/bin") if (path / "initdb").exists()]
    if versions:
        return max(versions, key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)])
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL's initdb is not installed; the database outage tests need it")
    return Path(initdb).parent


class PostgresServer:
    """``initdb`` once, then ``pg_ctl start``/``stop`` on the same port and data directory.

    ``stop()`` is a hard stop (``-m immediate``: every connection dropped at once, no checkpoint), as when
    the database crashes; ``start()`` brings it back through crash recovery, with all committed data.
    """

    def __init__(self, *, port: int | None = None, primary: PostgresServer | None = None) -> None:
        self.bin_dir = postgres_bin_dir()
        self.port = port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="goodnight-postgres-"))
        self.data = self.directory / "data"
        self.log_path = self.directory / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.running = False
        # A replica is cloned from its primary with pg_basebackup instead of initdb, and streams from it.
        self.primary = primary

    @classmethod
    def replica_of(cls, primary: PostgresServer) -> PostgresServer:
        """A hot standby streaming from ``primary`` (which must be running), on a port of its own."""
        return cls(primary=primary)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        command = [*self._as_user, str(self.bin_dir / program), *args]
        finished = subprocess.run(
            command,
            cwd=self.directory,  # the postgres user may not be allowed into the tests' working directory
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        if finished.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({finished.returncode}): {finished.stdout}{finished.stderr}\n{self.log()}"
            )

    def _initialise(self) -> None:
        if self.primary is not None:
            self._clone_primary()
            return
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        settings = {
            **SERVER_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.directory}'",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _clone_primary(self) -> None:
        """A base backup of the primary with ``-R`` (standby.signal plus primary_conninfo), so the copy starts
        as a read-only standby replaying the primary's WAL as it streams in. initdb's trust rules already let
        127.0.0.1 connect for replication."""
        assert self.primary is not None
        self._run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.data),
            "-R",
            "-X",
            "stream",
            "--no-sync",
        )
        # The copied postgresql.conf names the primary's port and socket directory: the last setting wins.
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.port}\nunix_socket_directories = '{self.directory}'\n")
            conf.write("hot_standby_feedback = on\n")

    def start(self) -> PostgresServer:
        if not self.data.exists():
            self._initialise()
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60")
        self.running = True
        return self

    def stop(self) -> None:
        """A hard stop: connections are cut at once, as when the server dies."""
        if self.running:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60")
            self.running = False

    async def _execute(self, statement: str) -> object:
        """One statement on a connection of its own; its first value."""
        connection = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="postgres", database="postgres"
        )
        try:
            return await connection.fetchval(statement)
        finally:
            await connection.close()

    async def pause_replay(self) -> None:
        """The standby goes on receiving the primary's WAL, but replays none of it."""
        await self._execute("SELECT pg_wal_replay_pause()")

    async def resume_replay(self) -> None:
        await self._execute("SELECT pg_wal_replay_resume()")

    async def commits(self) -> int:
        """Transactions clients committed here (replay on a standby is not counted). The statistics are
        flushed within a second or so."""
        sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"
        return int(await self._execute(sql))  # type: ignore[call-overload]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        try:
            self.stop()
        except (RuntimeError, subprocess.TimeoutExpired):
            self._kill_postmaster()
            raise
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        """The last resort when ``pg_ctl`` cannot stop it: its backends exit once the postmaster is gone."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
