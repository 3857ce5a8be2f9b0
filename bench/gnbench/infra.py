"""The services a run needs: a PostgreSQL database, a private redis-server, ``goodnight serve`` processes.

Everything here is started by the harness and stopped by the harness, by process id. The shared Redis on
6379 is never used: the private server gets a spare port and a throwaway folder.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class HarnessError(RuntimeError):
    """Something the run depends on is missing or did not start."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def command_line(argv: list[str], env: dict[str, str] | None = None) -> str:
    """A shell-ready rendering of a command, with the environment variables it was given in front."""
    prefix = " ".join(f"{name}={shlex.quote(value)}" for name, value in (env or {}).items())
    text = shlex.join(argv)
    return f"{prefix} {text}" if prefix else text


def goodnight_executable() -> str:
    beside = Path(sys.executable).parent / "goodnight"
    if beside.exists():
        return str(beside)
    found = shutil.which("goodnight")
    if found is None:
        raise HarnessError("the goodnight command is not installed (run: uv sync)")
    return found


def clean_environment() -> dict[str, str]:
    """The inherited environment without any GOODNIGHT_* setting, so nothing leaks into the servers."""
    return {name: value for name, value in os.environ.items() if not name.startswith("GOODNIGHT_")}


@dataclass(frozen=True)
class Postgres:
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres", **params: object) -> str:
        """Run SQL read from stdin; ``params`` become psql variables, quoted in the SQL as :'name'."""
        argv = ["psql", "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", database]
        argv += ["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        for name, value in params.items():
            argv += ["-v", f"{name}={value}"]
        result = subprocess.run(argv, input=sql, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise HarnessError(f"psql failed ({sql[:80]}...): {result.stderr.strip()}")
        return result.stdout.strip()

    def rows(self, sql: str, database: str, **params: object) -> list[list[str]]:
        output = self.psql(sql, database, **params)
        return [line.split("|") for line in output.splitlines() if line]

    def check(self) -> None:
        if shutil.which("psql") is None:
            raise HarnessError("psql is not installed")
        if not port_open(self.host, self.port):
            raise HarnessError(
                f"PostgreSQL is not answering on {self.host}:{self.port} (see scripts/services)"
            )

    def exists(self, database: str) -> bool:
        return self.psql("SELECT 1 FROM pg_database WHERE datname = :'name'", name=database) == "1"

    def drop(self, database: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def create(self, database: str, template: str | None = None) -> None:
        self.drop(database)
        if template is None:
            self.psql(f'CREATE DATABASE "{database}"')
        else:
            # FILE_COPY copies the files at once, much faster than WAL_LOG for a large dataset.
            self.psql(f'CREATE DATABASE "{database}" TEMPLATE "{template}" STRATEGY FILE_COPY')

    def version(self) -> str:
        return self.psql("SHOW server_version")


@dataclass
class Process:
    """A child started in its own session, so it and its workers stop together."""

    name: str
    argv: list[str]
    env_shown: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> str:
        return command_line(self.argv, self.env_shown)

    def start(self, env: dict[str, str], cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(  # noqa: S603
                self.argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        popen, self.popen = self.popen, None
        if popen is None:
            return
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait(5)
        else:
            # The leader is gone; make sure no worker it forked outlives it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@dataclass
class RedisServer:
    """A private redis-server on a spare port: no persistence except the snapshots the harness asks for."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def snapshot(self) -> Path:
        return self.folder / "dump.rdb"

    def start(self, timeout: float = 300.0) -> None:
        if shutil.which("redis-server") is None:
            raise HarnessError("redis-server is not installed (apt-get install -y redis-server)")
        if self.port == 6379:
            raise HarnessError("refusing to run the benchmark Redis on the shared port 6379")
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.folder), "--dbfilename", "dump.rdb"]
        argv += ["--maxmemory-policy", "noeviction", "--protected-mode", "yes"]
        self.process = Process("redis", argv, {}, self.folder / "redis.log")
        self.process.start(clean_environment(), self.folder)
        deadline = time.monotonic() + timeout  # loading a large snapshot takes a while
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise HarnessError(f"redis-server exited:\n{self.process.log_tail()}")
            with contextlib.suppress(OSError):
                if self.call("PING") == "PONG":
                    return
            time.sleep(0.1)
        raise HarnessError("redis-server did not answer PING in time")

    def call(self, *words: str) -> str:
        """One command over a fresh connection, answer as text (simple strings, integers, bulk strings)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=600) as conn:
            parts = [f"*{len(words)}\r\n".encode()]
            for word in words:
                data = word.encode()
                parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
            conn.sendall(b"".join(parts))
            reader = conn.makefile("rb")
            line = reader.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:].decode()
            if kind == b"-":
                raise OSError(f"redis error: {rest}")
            if kind == b"$":
                size = int(rest)
                return "" if size < 0 else reader.read(size + 2)[:-2].decode(errors="replace")
            return rest

    def info(self, section: str) -> dict[str, str]:
        pairs = (line.split(":", 1) for line in self.call("INFO", section).splitlines() if ":" in line)
        return {pair[0]: pair[1] for pair in pairs}

    def save(self) -> None:
        self.call("SAVE")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


@dataclass
class Server:
    """``goodnight serve --workers N`` on a spare port."""

    name: str
    folder: Path
    workers: int
    settings: dict[str, str]  # the GOODNIGHT_* variables
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def shown_settings(self) -> dict[str, str]:
        return {
            name: "<48 random characters>" if name == "GOODNIGHT_JWT_SECRET" else value
            for name, value in self.settings.items()
        }

    def argv(self) -> list[str]:
        port, workers = str(self.port), str(self.workers)
        return [goodnight_executable(), "serve", "--host", "127.0.0.1", "--port", port, "--workers", workers]

    @property
    def command(self) -> str:
        shown = [Path(self.argv()[0]).name, *self.argv()[1:]]
        return command_line(shown, self.shown_settings())

    def start(self) -> None:
        self.process = Process(
            self.name, self.argv(), self.shown_settings(), self.folder / f"{self.name}.log"
        )
        self.process.start({**clean_environment(), **self.settings}, self.folder)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.base}/api/v1/health/ready"
        while time.monotonic() < deadline:
            if self.process is None or not self.process.alive():
                tail = self.process.log_tail() if self.process else ""
                raise HarnessError(f"server {self.name} exited:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310  (our own local server)
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise HarnessError(f"server {self.name} was not ready within {timeout:.0f}s")

    def error_lines(self) -> int:
        """Log lines at level error or above (the logs are JSON in production)."""
        if self.process is None:
            return 0
        try:
            text = self.process.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(
            1 for line in text.splitlines() if '"level":"error"' in line or '"level":"critical"' in line
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class OutboxWorker(Server):
    """``goodnight worker`` in a process (and session) of its own, with /metrics on a spare port: its CPU is
    then a tier of its own, which the capacity model sizes apart from the API."""

    def argv(self) -> list[str]:
        return [goodnight_executable(), "worker", "--metrics-port", str(self.port)]

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or not self.process.alive():
                tail = self.process.log_tail() if self.process else ""
                raise HarnessError(f"{self.name} exited:\n{tail}")
            if port_open("127.0.0.1", self.port):
                return
            time.sleep(0.2)
        raise HarnessError(f"{self.name} did not serve /metrics within {timeout:.0f}s")


def scrape_counter(base: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of a Prometheus counter's samples at ``base``/metrics whose labels include ``labels``."""
    wanted = [f'{key}="{value}"' for key, value in (labels or {}).items()]
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:  # noqa: S310  (our own server)
        text = answer.read().decode()
    total = 0.0
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.partition("{")[0] == name and all(label in sample for label in wanted):
            total += float(value)
    return total
