"""The real ``goodnight`` command: ``serve`` over real HTTP (embedded SQLite, PostgreSQL with two workers,
production start-up checks), ``migrate``, and ``--help``. Every process started here is stopped again."""

from __future__ import annotations

import json
import secrets
import sqlite3
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from goodnight.migrate import head_revision
from tests.support import databases
from tests.support.api import PASSWORD
from tests.support.processes import (
    Server,
    clean_env,
    free_port,
    is_listening,
    run_cli,
    serving,
)

SECRET_FILE = "goodnight.db.jwt-secret"


@dataclass
class Account:
    id: str
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def register_and_login(http: httpx.Client, username: str) -> Account:
    created = http.post("/users", json={"username": username, "password": PASSWORD, "name": username.title()})
    assert created.status_code == 201, created.text
    login = http.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 200, login.text
    body = login.json()
    assert body["token_type"] == "bearer"
    return Account(created.json()["id"], username, body["token"])


def drive_a_night(server: Server, prefix: str = "") -> tuple[Account, Account]:
    """The README walk-through over real HTTP: register, login, follow, clock in and out, read the feed."""
    with httpx.Client(base_url=server.api_url, timeout=10.0) as http:
        alice = register_and_login(http, f"{prefix}alice")
        bob = register_and_login(http, f"{prefix}bob")

        followed = http.post(f"/socials/follow/{bob.id}", headers=alice.headers)
        assert followed.status_code == 201, followed.text

        went_to_bed = datetime.now(UTC) - timedelta(hours=7, minutes=30)
        clocked_in = http.post(
            "/sleep_records/clock_in", json={"clocked_in_at": iso(went_to_bed)}, headers=bob.headers
        )
        assert clocked_in.status_code == 201, clocked_in.text
        assert clocked_in.json()["sleep_record"]["state"] == "clocked_in"
        clocked_out = http.post("/sleep_records/clock_out", headers=bob.headers)
        assert clocked_out.status_code == 200, clocked_out.text
        assert clocked_out.json()["duration"] >= 7 * 3600 + 30 * 60

        feed = http.get("/sleep_records/followings", headers=alice.headers)
        assert feed.status_code == 200, feed.text
        items = feed.json()["data"]
        assert [item["id"] for item in items] == [clocked_in.json()["sleep_record_id"]]
        assert items[0]["user"]["id"] == bob.id
        assert items[0]["humanized_duration"].startswith(("7 hours and 30 minutes", "7 hours, 30 minutes,"))

        bob_now = http.get(f"/users/{bob.id}", headers=alice.headers)
        assert bob_now.status_code == 200, bob_now.text
        assert bob_now.json()["followers_count"] == 1
        assert "X-Request-ID" in bob_now.headers
    return alice, bob


# --- the embedded default --------------------------------------------------------------------------------


def test_serve_in_an_empty_folder_uses_sqlite_and_keeps_its_secret_across_restarts(tmp_path: Path) -> None:
    workdir = tmp_path / "newcomer"
    workdir.mkdir()
    env = clean_env()  # no GOODNIGHT_DATABASE_URL, no GOODNIGHT_JWT_SECRET: a newcomer's first run

    with serving(workdir, env) as server:
        alice, bob = drive_a_night(server)
        docs = httpx.get(f"{server.base_url}/api-docs", timeout=10.0)
        assert docs.status_code == 200
        assert "swagger-ui" in docs.text
        assert httpx.get(f"{server.base_url}/openapi.json", timeout=10.0).status_code == 200

    database, secret_file = workdir / "goodnight.db", workdir / SECRET_FILE
    assert database.is_file()
    assert secret_file.is_file()
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32
    assert stat.S_IMODE(secret_file.stat().st_mode) & 0o077 == 0, "the generated secret must be private"
    with sqlite3.connect(database) as connection:
        (users,) = connection.execute("SELECT COUNT(*) FROM users").fetchone()
    assert users == 2

    # A second start finds the database migrated and the secret kept: yesterday's tokens still work.
    with (
        serving(workdir, env, log_name="restart.log") as server,
        httpx.Client(base_url=server.api_url) as http,
    ):
        me = http.get("/users/me", headers=alice.headers)
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "alice"
        assert me.json()["followings_count"] == 1
        feed = http.get("/sleep_records/followings", headers=alice.headers)
        assert feed.status_code == 200, feed.text
        assert [item["user"]["id"] for item in feed.json()["data"]] == [bob.id]
        forged = http.get("/users/me", headers={"Authorization": f"Bearer {alice.token}x"})
        assert forged.status_code == 401
    assert secret_file.read_text().strip() == secret


# --- PostgreSQL, several workers ---------------------------------------------------------------------------


def test_serve_migrates_postgresql_and_runs_two_workers(
    tmp_path: Path, empty_postgres: databases.TestDatabase
) -> None:
    workdir = tmp_path / "pg"
    workdir.mkdir()
    env = clean_env(GOODNIGHT_DATABASE_URL=empty_postgres.url)

    with serving(workdir, env, "--workers", "2") as server:
        deadline = time.monotonic() + 30
        while server.log().count("Started server process") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.log().count("Started server process") == 2, server.log()
        assert "database is at revision" in server.log()

        alice, bob = drive_a_night(server, prefix="pg_")
        # Fresh connections each time, so requests land on either worker: a token issued by one worker is
        # accepted by the other (they share the one secret generated before they started).
        token = alice.token
        for _ in range(20):
            fresh = httpx.get(
                f"{server.api_url}/users/me",
                headers={"Authorization": f"Bearer {token}", "Connection": "close"},
                timeout=10.0,
            )
            assert fresh.status_code == 200, fresh.text
            login = httpx.post(
                f"{server.api_url}/auth/login",
                json={"username": alice.username, "password": PASSWORD},
                headers={"Connection": "close"},
                timeout=10.0,
            )
            assert login.status_code == 200, login.text
            token = login.json()["token"]

        # A race that spans both processes (and both connection pools): still exactly one open record.
        def clock_in() -> int:
            response = httpx.post(
                f"{server.api_url}/sleep_records/clock_in",
                headers={**bob.headers, "Connection": "close"},
                timeout=30.0,
            )
            return response.status_code

        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = sorted(pool.map(lambda _: clock_in(), range(20)))
        assert statuses == [201] + [400] * 19
        assert server.process.poll() is None, server.log()

    # No SQLite file to keep it beside, so the development secret lives in the working directory.
    assert (workdir / "goodnight.jwt-secret").is_file()
    assert not (workdir / "goodnight.db").exists()


# --- production start-up checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "complaint"),
    [
        (None, "GOODNIGHT_JWT_SECRET must be set"),
        ("secret", "too short"),
        ("a" * 48, "placeholder"),
    ],
    ids=["missing", "weak", "repetitive"],
)
def test_production_refuses_to_start_without_a_strong_secret(
    tmp_path: Path, secret: str | None, complaint: str
) -> None:
    env = clean_env(GOODNIGHT_ENV="production")
    if secret is not None:
        env["GOODNIGHT_JWT_SECRET"] = secret
    port = free_port()

    result = run_cli(["serve", "--port", str(port)], cwd=tmp_path, env=env, timeout=30)

    assert result.returncode != 0, result.stdout + result.stderr
    assert complaint in result.stderr, result.stderr
    assert "configuration error" in result.stderr
    assert "Traceback" not in result.stderr, "a clear message, not a stack trace"
    if secret is not None and len(secret) >= 16:
        assert secret not in result.stderr, "the rejected secret must not be echoed"
    assert "Uvicorn running" not in result.stdout + result.stderr
    assert not is_listening(port)
    assert list(tmp_path.iterdir()) == [], "nothing may be created when start-up is refused"


def test_production_with_a_strong_secret_serves_and_logs_json(tmp_path: Path) -> None:
    workdir = tmp_path / "production"
    workdir.mkdir()
    env = clean_env(GOODNIGHT_ENV="production", GOODNIGHT_JWT_SECRET=secrets.token_urlsafe(48))

    with serving(workdir, env) as server:
        alice, _ = drive_a_night(server)
        me = httpx.get(f"{server.api_url}/users/me", headers={**alice.headers, "X-Request-ID": "trace-me-42"})
        assert me.status_code == 200, me.text
        assert me.headers["X-Request-ID"] == "trace-me-42"
        time.sleep(0.5)  # let the last request's log line reach the file
        log = server.log()

    assert not (workdir / SECRET_FILE).exists(), (
        "production uses the configured secret, never a generated one"
    )
    requests = [entry for entry in _json_lines(log) if "path" in entry]
    assert any(
        entry["path"] == "/api/v1/users/me"
        and entry["status"] == 200
        and entry["request_id"] == "trace-me-42"
        and entry["user_id"] == alice.id
        and entry["method"] == "GET"
        and "duration_ms" in entry
        for entry in requests
    ), log
    assert alice.token not in log
    assert PASSWORD not in log


def _json_lines(text: str) -> list[dict[str, object]]:
    """Every line of a production log, each a JSON object (uvicorn's own lines included)."""
    return [json.loads(line) for line in text.splitlines()]


# --- the other commands ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["serve"], ["migrate"]], ids=["goodnight", "serve", "migrate"])
def test_help(tmp_path: Path, command: list[str]) -> None:
    result = run_cli([*command, "--help"], cwd=tmp_path, env=clean_env(), timeout=30)

    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    if command == ["serve"]:
        for option in ("--host", "--port", "--workers"):
            assert option in result.stdout
    if not command:
        for subcommand in ("serve", "migrate"):
            assert subcommand in result.stdout
    assert list(tmp_path.iterdir()) == [], "--help must not touch the working directory"


def sqlite_schema(path: Path) -> tuple[set[str], str]:
    with sqlite3.connect(path) as connection:
        tables = {
            name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return tables, revision


def test_migrate_creates_the_schema_on_a_fresh_sqlite_path(tmp_path: Path) -> None:
    database = tmp_path / "nested" / "folders" / "fresh.db"
    env = clean_env(GOODNIGHT_DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    first = run_cli(["migrate"], cwd=workdir, env=env)

    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"database is at revision {head_revision()}"
    tables, revision = sqlite_schema(database)
    assert {"users", "follows", "sleep_records", "alembic_version"} <= tables
    assert revision == head_revision()
    assert list(workdir.iterdir()) == []

    again = run_cli(["migrate"], cwd=workdir, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


def test_migrate_without_a_url_creates_goodnight_db_in_the_working_directory(tmp_path: Path) -> None:
    result = run_cli(["migrate"], cwd=tmp_path, env=clean_env())

    assert result.returncode == 0, result.stderr
    tables, revision = sqlite_schema(tmp_path / "goodnight.db")
    assert {"users", "follows", "sleep_records"} <= tables
    assert revision == head_revision()
