from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from goodnight.config import ConfigurationError, Settings, load_or_create_secret

STRONG = "k3y-" + "Zq8vT1mW0pLx" * 4


def test_production_requires_a_secret() -> None:
    with pytest.raises(ConfigurationError, match="GOODNIGHT_JWT_SECRET must be set"):
        Settings(env="production")  # type: ignore[arg-type]


@pytest.mark.parametrize("weak", ["secret", "changeme", "short-but-random-9x", "a" * 64, "ab" * 32])
def test_production_refuses_weak_secrets(weak: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings(env="production", jwt_secret=weak)  # type: ignore[arg-type]


def test_production_accepts_a_strong_secret() -> None:
    settings = Settings(env="production", jwt_secret=STRONG)  # type: ignore[arg-type]
    assert settings.resolved_jwt_secret() == STRONG


def test_development_secret_is_created_beside_the_database_and_kept(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'app.db'}")
    first = settings.resolved_jwt_secret()
    secret_file = tmp_path / "data" / "app.db.jwt-secret"
    assert secret_file.read_text() == first
    assert secret_file.stat().st_mode & 0o077 == 0, "the secret file must be private"
    assert len(first) >= 32
    assert settings.resolved_jwt_secret() == first


def test_racing_processes_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "goodnight.db.jwt-secret"
    with ThreadPoolExecutor(max_workers=16) as pool:
        secrets = set(pool.map(lambda _: load_or_create_secret(path), range(64)))
    assert len(secrets) == 1
    assert list(tmp_path.iterdir()) == [path], "no temporary files are left behind"


def test_default_database_is_sqlite_in_the_working_directory() -> None:
    settings = Settings()
    assert settings.is_sqlite
    assert settings.sqlite_path() == Path("goodnight.db")


PG = "postgresql+asyncpg://goodnight@db:5432/goodnight"
MARIADB = "mysql+asyncmy://goodnight@db:3306/goodnight"


@pytest.mark.parametrize(
    ("primary", "replicas"),
    [
        (PG, "postgresql+asyncpg://goodnight@replica-1:5432/goodnight,postgresql+asyncpg://r@replica-2/g"),
        (MARIADB, "mysql+asyncmy://goodnight@replica-1:3306/goodnight,mariadb+asyncmy://r@replica-2/g"),
    ],
)
def test_replicas_on_postgresql_or_mariadb_are_accepted(primary: str, replicas: str) -> None:
    settings = Settings(database_url=primary, database_replica_urls=replicas)
    assert len(settings.replica_url_list) == 2


@pytest.mark.parametrize(
    ("primary", "replicas"),
    [
        ("sqlite+aiosqlite:///goodnight.db", "sqlite+aiosqlite:///copy.db"),
        ("sqlite+aiosqlite:///goodnight.db", PG),
        (PG, MARIADB),
        (MARIADB, f"{MARIADB},{PG}"),
    ],
)
def test_replicas_need_postgresql_or_mariadb_throughout(primary: str, replicas: str) -> None:
    with pytest.raises(ConfigurationError, match="read replicas need PostgreSQL or MariaDB"):
        Settings(database_url=primary, database_replica_urls=replicas)


def test_a_replica_url_that_does_not_parse_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="not a database URL"):
        Settings(database_url=PG, database_replica_urls="replica-1:5432")
