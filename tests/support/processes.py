"""Real ``goodnight`` processes for tests: the CLI, and ``goodnight serve`` on a free port, always stopped."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.databases import MARIADB_ADMIN_URL, POSTGRES_ADMIN_URL, ServerUnavailable, TestDatabase

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
# Real Argon2id, cheap enough for tests (the production defaults take ~100 ms and 64 MiB per hash).
CHEAP_ARGON2 = {
    "GOODNIGHT_ARGON2_TIME_COST": "1",
    "GOODNIGHT_ARGON2_MEMORY_KIB": "8",
    "GOODNIGHT_ARGON2_PARALLELISM": "1",
}


def goodnight_command() -> list[str]:
    """The ``goodnight`` console script of the interpreter running the tests."""
    script = Path(sys.executable).parent / "goodnight"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from goodnight.cli import app; app()"]


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any GOODNIGHT_* setting, plus cheap Argon2 and ``overrides``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GOODNIGHT_")}
    env.update(CHEAP_ARGON2)
    env["PYTHONUNBUFFERED"] = "1"
    # Tests drive servers harder than any one client may; the rate limit tests switch limits back on.
    env["GOODNIGHT_RATE_LIMITS"] = "off"
    env.update(overrides)
    return env


def production_env(**overrides: str) -> dict[str, str]:
    """A server as production runs it: JSON logs, a real secret (and, from ``clean_env``, no rate limits)."""
    return clean_env(GOODNIGHT_ENV="production", GOODNIGHT_JWT_SECRET=secrets.token_urlsafe(48), **overrides)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def run_cli(
    args: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``goodnight <args>`` to completion (killed, and the test failed, if it outlives ``timeout``)."""
    return subprocess.run(
        [*goodnight_command(), *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_until_healthy(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no attempt yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                status, output = self.process.returncode, self.log()
                raise AssertionError(f"goodnight serve exited with {status} before being healthy:\n{output}")
            try:
                response = httpx.get(f"{self.api_url}/health", timeout=2.0)
                if response.status_code == 200 and response.json() == {"status": "ok"}:
                    return
                last_error = f"{response.status_code} {response.text}"
            except httpx.TransportError as exc:
                last_error = repr(exc)
            time.sleep(0.1)
        raise AssertionError(
            f"goodnight serve was not healthy within {timeout:.0f}s (last: {last_error}):\n{self.log()}"
        )

    def stop(self) -> None:
        """Stop the server and every worker it forked: SIGTERM to its process group, then SIGKILL."""
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT_S)
        # Workers left behind by a crashed supervisor share its process group: take them down too.
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: signal.Signals) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)


@contextmanager
def serving(
    cwd: Path, env: Mapping[str, str], *extra_args: str, port: int | None = None, log_name: str = "serve.log"
) -> Iterator[Server]:
    """``goodnight serve`` in ``cwd``, healthy on a free port for the duration of the block, then stopped."""
    port = port or free_port()
    log_path = cwd.parent / f"{cwd.name}-{log_name}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*goodnight_command(), "serve", "--host", "127.0.0.1", "--port", str(port), *extra_args],
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches the workers as well
        )
    server = Server(process, port, log_path)
    try:
        server.wait_until_healthy()
        yield server
    finally:
        server.stop()


async def create_empty_database(backend: str) -> TestDatabase:
    """A new, empty database on the PostgreSQL or MariaDB test server: no schema, for the CLI to migrate."""
    admin_url = POSTGRES_ADMIN_URL if backend == "postgresql" else MARIADB_ADMIN_URL
    name = f"goodnight_serve_{uuid.uuid4().hex[:12]}"
    quoted = f'"{name}"' if backend == "postgresql" else f"`{name}`"
    suffix = " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" if backend == "mariadb" else ""
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(sa.text(f"CREATE DATABASE {quoted}{suffix}"))
    except (OSError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise ServerUnavailable(f"cannot reach the {backend} test server: {exc}") from exc
    finally:
        await engine.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return TestDatabase(backend, url, admin_url, name)
