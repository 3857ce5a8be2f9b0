"""Runtime configuration, read from ``GOODNIGHT_*`` environment variables."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from goodnight.ratelimit.client_ip import parse_networks
from goodnight.ratelimit.policies import parse_limits

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///goodnight.db"
MIN_SECRET_LENGTH = 32
# Values people paste from examples. A production deployment using one of them is worse than no secret.
PLACEHOLDER_SECRETS = frozenset(
    {"secret", "changeme", "change-me", "change_me", "password", "jwt-secret", "jwt_secret", "goodnight"}
)


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


# The servers whose replicas can be read, by SQLAlchemy backend name (MariaDB answers to both of its).
_REPLICATED_SERVERS = {"postgresql": "postgresql", "mysql": "mariadb", "mariadb": "mariadb"}


class ConfigurationError(RuntimeError):
    """Raised at start-up when the settings cannot run a safe service."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GOODNIGHT_", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    # Set to 1 when GOODNIGHT_REDIS_URL points at a Redis Cluster node (cluster URLs look like any other).
    redis_cluster: bool = False
    # How long opening a Redis connection, and then each reply, may take before Redis counts as away for the
    # moment (feeds are served from SQL meanwhile, see redis_client.Breaker). Raise them for a Redis across
    # a slow link, or on a machine loaded enough that even a local connection can take half a second.
    redis_connect_timeout_seconds: float = Field(default=0.5, gt=0)
    redis_timeout_seconds: float = Field(default=1.0, gt=0)
    # Replies (timeline buckets and markers, feed items) each API process keeps under Redis's client-side
    # caching, so a page whose timeline and items are unchanged costs one round trip and almost no Redis
    # time; items are about 0.5 KB each. 0 turns the cache off.
    redis_client_cache_size: int = Field(default=50_000, ge=0)
    # Followers above this count make a user a celebrity: no fanout, merged into feeds at read time.
    celebrity_threshold: int = Field(default=10_000, ge=1)
    # Timelines are kept up to date only for users seen within this many days.
    active_days: int = Field(default=7, ge=1, le=365)
    # Background work (the transactional outbox).
    embedded_worker: bool = True
    outbox_lease_seconds: float = Field(default=30.0, gt=0)
    outbox_max_attempts: int = Field(default=10, ge=1)
    outbox_poll_seconds: float = Field(default=0.2, gt=0)
    fanout_batch_size: int = Field(default=1000, ge=1)
    # Feeds come from SQL while the oldest unapplied outbox event is older than this: a timeline that is
    # behind on its writes must not be served as the truth.
    timeline_max_lag_seconds: float = Field(default=1.0, gt=0)
    jwt_secret: SecretStr | None = None
    jwt_ttl_seconds: int = Field(default=7200, ge=60, le=30 * 24 * 3600)
    # Argon2id cost. The defaults are RFC 9106's low-memory profile; tests lower them to stay fast.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    database_pool_size: int = Field(default=10, ge=1)
    # How long a request waits for a free database connection before it is refused with 503.
    database_pool_timeout_seconds: float = Field(default=3.0, gt=0)
    # Read replicas of the primary (comma-separated URLs, PostgreSQL or MariaDB): reads that tolerate a
    # moment's staleness go to them, a user's own writes excepted (docs/operations.md, "Read replicas").
    database_replica_urls: str = ""
    # A replica further behind than this is skipped until it catches up.
    replica_max_lag_seconds: float = Field(default=2.0, gt=0)

    # --- The edge: abuse limits and backpressure (docs/operations.md) ---
    # ``off`` switches every rate limit off (benchmarks, load tests); on by default in every environment.
    rate_limits: bool = True
    # Each policy is a ``limits`` string: "5/minute", several separated by ";".
    rate_limit_login_ip: str = "5/minute"
    rate_limit_login_user: str = "10/15 minutes"
    rate_limit_signup: str = "10/hour"
    rate_limit_anonymous: str = "100/minute"
    rate_limit_user: str = "1200/minute"
    # Peers whose X-Forwarded-For is believed: comma-separated IPs or CIDRs. Empty: nobody's.
    trusted_proxies: str = ""
    # Argon2 hashes running at once in one process (each holds ~64 MiB); None means the CPU count.
    hash_concurrency: int | None = Field(default=None, ge=1)
    # A request waiting longer than this to start its password hash is refused with 503.
    hash_wait_seconds: float = Field(default=2.0, gt=0)
    # Requests one process works on at once; beyond it, 503 at once instead of a queue.
    max_requests_in_flight: int = Field(default=64, ge=1)
    # Origins (exact, comma-separated) whose browser apps may call the API. Empty: none.
    cors_origins: str = ""

    # --- Metrics (docs/operations.md "Metrics") ---
    # ``off`` removes /metrics and stops recording requests (benchmarks compare the two).
    metrics: bool = True
    # When set, /metrics requires ``Authorization: Bearer <token>``; unset, it answers loopback peers only.
    metrics_token: SecretStr | None = None

    @model_validator(mode="after")
    def _production_needs_a_real_secret(self) -> Settings:
        if self.env is Environment.PRODUCTION:
            if self.jwt_secret is None:
                raise ConfigurationError(
                    "GOODNIGHT_JWT_SECRET must be set when GOODNIGHT_ENV=production "
                    '(generate one with: python3 -c "import secrets; print(secrets.token_urlsafe(48))")'
                )
            check_secret_strength(self.jwt_secret.get_secret_value())
        return self

    @model_validator(mode="after")
    def _metrics_token_is_strong(self) -> Settings:
        """In every environment: /metrics is never rate-limited, so a short token could be guessed."""
        if self.metrics_token is not None:
            check_secret_strength(self.metrics_token.get_secret_value(), "GOODNIGHT_METRICS_TOKEN")
        return self

    @model_validator(mode="after")
    def _rate_limits_parse(self) -> Settings:
        """A limit or proxy that does not parse stops the start-up: a typo must not switch a limit off."""
        for name, text in self.rate_limit_policies.items():
            try:
                parse_limits(text)
            except ValueError as exc:
                raise ConfigurationError(
                    f"GOODNIGHT_RATE_LIMIT_{name.upper()}={text!r} is not a rate limit ({exc}); "
                    "write it like '5/minute' or '10/15 minutes', several separated by ';'"
                ) from None
        try:
            parse_networks(self.trusted_proxy_list)
        except ValueError as exc:
            raise ConfigurationError(
                f"GOODNIGHT_TRUSTED_PROXIES: {exc}; list IP addresses or CIDR networks separated by commas"
            ) from None
        return self

    @property
    def rate_limit_policies(self) -> dict[str, str]:
        """Each policy's name and its ``limits`` string."""
        return {
            "login_ip": self.rate_limit_login_ip,
            "login_user": self.rate_limit_login_user,
            "signup": self.rate_limit_signup,
            "anonymous": self.rate_limit_anonymous,
            "user": self.rate_limit_user,
        }

    @model_validator(mode="after")
    def _replicas_share_the_primary_backend(self) -> Settings:
        for url in self.replica_url_list:
            try:
                backend = make_url(url).get_backend_name()
            except ArgumentError as exc:
                message = f"GOODNIGHT_DATABASE_REPLICA_URLS: not a database URL: {exc}"
                raise ConfigurationError(message) from None
            primary = _REPLICATED_SERVERS.get(make_url(self.database_url).get_backend_name())
            if primary is None or _REPLICATED_SERVERS.get(backend) != primary:
                # Read-your-writes compares replication positions: PostgreSQL's WAL, MariaDB's GTIDs.
                raise ConfigurationError(
                    "GOODNIGHT_DATABASE_REPLICA_URLS: read replicas need PostgreSQL or MariaDB, the primary "
                    "and every replica on the same one (SQLite has no replicas)"
                )
        return self

    @property
    def replica_url_list(self) -> list[str]:
        return _comma_separated(self.database_replica_urls)

    @property
    def cors_origin_list(self) -> list[str]:
        return _comma_separated(self.cors_origins)

    @property
    def trusted_proxy_list(self) -> list[str]:
        return _comma_separated(self.trusted_proxies)

    def resolved_hash_concurrency(self) -> int:
        return self.hash_concurrency or os.cpu_count() or 1

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "sqlite"

    def sqlite_path(self) -> Path | None:
        """The SQLite database file, or None for other backends and in-memory databases."""
        url = make_url(self.database_url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return Path(url.database)

    def secret_file(self) -> Path:
        """Where development keeps its generated JWT secret: beside the SQLite database, else in the cwd."""
        db_path = self.sqlite_path()
        directory = db_path.parent if db_path is not None else Path.cwd()
        name = (db_path.name if db_path is not None else "goodnight") + ".jwt-secret"
        return directory / name

    def resolved_jwt_secret(self) -> str:
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        return load_or_create_secret(self.secret_file())


def _comma_separated(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def check_secret_strength(secret: str, name: str = "GOODNIGHT_JWT_SECRET") -> None:
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"{name} is too short ({len(secret)} characters); use at least {MIN_SECRET_LENGTH}"
        )
    if secret.lower() in PLACEHOLDER_SECRETS or len(set(secret)) < 8:
        raise ConfigurationError(f"{name} looks like a placeholder; use a random value")


def load_or_create_secret(path: Path) -> str:
    """Read the development secret, creating it exactly once even when several workers start together."""
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write a private temporary file, then hard-link it into place: the link either creates the complete
    # file atomically or fails because another process won the race, in which case we use its secret.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".jwt-secret-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
