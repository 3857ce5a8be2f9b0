"""A private MariaDB server for the tests: real MariaDB, on a spare port, ours to stop and start.

The shared test server must never be stopped or reconfigured; a test that needs replication, or takes the
database away, starts one of these. Each lives in a temporary directory (``mariadb-install-db``), listens on
127.0.0.1 only, with root and no password, and writes its binary log (row format, GTIDs) so replicas can
follow it; durability is relaxed (nothing here needs to survive the machine crashing). MariaDB refuses to run
as root unless told to, so when the tests do, it runs as the ``mysql`` system user, who owns the directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncmy

from tests.support.redis_server import free_port

COMMAND_TIMEOUT_S = 60.0
DATABASE = "goodnight"


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
        if found is not None:
            return found
    raise RuntimeError(f"MariaDB's {names[0]} is not installed; the MariaDB replica tests need it")


def _accepts(port: int) -> bool:
    """The server sends its handshake as soon as it accepts connections."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as connection:
            return bool(connection.recv(1))
    except OSError:
        return False


class MariaDbServer:
    """``mariadb-install-db`` once, then ``mariadbd`` started and hard-stopped on the same port and data.

    ``stop()`` kills the server (SIGKILL: every connection dropped at once, as when it crashes); ``start()``
    brings it back through crash recovery. A replica (``replica_of``) follows its primary by GTID, and starts
    replicating again by itself after a restart.
    """

    def __init__(self, *, port: int | None = None, primary: MariaDbServer | None = None) -> None:
        self.port = port or free_port()
        self.primary = primary
        self.directory = Path(tempfile.mkdtemp(prefix="goodnight-mariadb-"))
        self.data = self.directory / "data"
        self.log_path = self.directory / "error.log"
        self._user = "root" if os.geteuid() != 0 else "mysql"
        if os.geteuid() == 0:
            owner = pwd.getpwnam("mysql")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def replica_of(cls, primary: MariaDbServer) -> MariaDbServer:
        """A read-only replica of ``primary`` (which must be running), on a port of its own."""
        return cls(primary=primary)

    @property
    def url(self) -> str:
        return f"mysql+asyncmy://root@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _initialise(self) -> None:
        _run(
            [
                _binary("mariadb-install-db", "mysql_install_db"),
                "--no-defaults",
                f"--datadir={self.data}",
                f"--user={self._user}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            "mariadb-install-db",
            cwd=self.directory,
        )

    def _server_options(self) -> list[str]:
        options = [
            "--no-defaults",
            f"--datadir={self.data}",
            f"--user={self._user}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.directory / 'mariadbd.sock'}",
            f"--pid-file={self.directory / 'mariadbd.pid'}",
            f"--log-error={self.log_path}",
            "--skip-name-resolve",
            # Unique on this machine, as replication needs.
            f"--server-id={self.port}",
            f"--log-bin={self.data / 'binlog'}",
            "--binlog-format=ROW",
            # Per-user statistics: what the tests count a server's reads by (``commits``).
            "--userstat=1",
            "--innodb-flush-log-at-trx-commit=2",
            "--sync-binlog=0",
            "--innodb-buffer-pool-size=32M",
            "--max-connections=100",
        ]
        if self.primary is not None:
            options += ["--read-only", f"--relay-log={self.data / 'relay'}", "--relay-log-recovery"]
        return options

    def start(self) -> MariaDbServer:
        first_start = not self.data.exists()
        if first_start:
            self._initialise()
        self.process = subprocess.Popen(
            [_binary("mariadbd", "mysqld"), *self._server_options()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while not _accepts(self.port):
            if not self.running or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mariadbd did not start on port {self.port}:\n{self.log()}")
            time.sleep(0.05)
        if first_start:
            self._set_up()
        return self

    def _set_up(self) -> None:
        if self.primary is None:
            self.sql(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            return
        # From the primary's first GTID on: its binary log holds everything since it first started.
        self.sql(
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={self.primary.port}, MASTER_USER='root', "
            "MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos; START SLAVE"
        )

    def sql(self, statements: str) -> str:
        """Run statements with the command-line client; their output, tab-separated."""
        return _run(
            [
                _binary("mariadb", "mysql"),
                "--no-defaults",
                "--protocol=TCP",
                "-h127.0.0.1",
                f"-P{self.port}",
                "-uroot",
                "-N",
                "-e",
                statements,
            ],
            "mariadb",
            log=self.log,
        )

    async def _execute(self, statement: str) -> object:
        """One statement on a connection of its own, never committed (so it counts in no ``commits``)."""
        connection = await asyncmy.connect(host="127.0.0.1", port=self.port, user="root")
        try:
            async with connection.cursor() as cursor:
                await cursor.execute(statement)
                row = await cursor.fetchone()
            await connection.rollback()
            return None if row is None else row[0]
        finally:
            await connection.ensure_closed()

    async def pause_replay(self) -> None:
        """The replica goes on receiving the primary's binary log, but applies none of it."""
        await self._execute("STOP SLAVE SQL_THREAD")

    async def resume_replay(self) -> None:
        await self._execute("START SLAVE SQL_THREAD")

    async def commits(self) -> int:
        """Transactions clients committed here (what the replica's own replication applies is not counted)."""
        sql = "SELECT COMMIT_TRANSACTIONS FROM information_schema.USER_STATISTICS WHERE USER = 'root'"
        return int(await self._execute(sql) or 0)  # type: ignore[call-overload]

    def stop(self) -> None:
        """A hard stop: connections are cut at once, as when the server dies."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=COMMAND_TIMEOUT_S)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def _run(argv: list[str], what: str, *, cwd: Path | None = None, log: Callable[[], str] | None = None) -> str:
    """Run one of MariaDB's command-line tools; its output, or an error naming ``what`` failed."""
    finished = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if finished.returncode != 0:
        detail = f"{finished.stdout}{finished.stderr}" + (f"\n{log()}" if log is not None else "")
        raise RuntimeError(f"{what} failed: {detail}")
    return finished.stdout
