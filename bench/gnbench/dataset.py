"""Dataset profiles, and seeding (or reusing) one with ``goodnight seed``.

A seeded dataset is cached as a PostgreSQL template database plus a snapshot of the Redis timelines. Every
run works on a fresh copy of both (``CREATE DATABASE ... TEMPLATE``, the snapshot loaded by the private
redis-server), so the writes a run makes never leak into the next one. A cache older than
``--max-age-hours`` is seeded again: the data is anchored at the hour it was generated and slides out of the
feed's 7-day window.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gnbench.infra import (
    REPO,
    HarnessError,
    Postgres,
    RedisServer,
    clean_environment,
    command_line,
    goodnight_executable,
)


@dataclass(frozen=True)
class Profile:
    name: str
    users: int
    avg_followings: float
    celebrities: int
    days: int
    celebrity_threshold: int
    # Tiny datasets are for the smoke test: the shared password is hashed with a cheap Argon2 cost, so the
    # harness's logins take microseconds. Real profiles keep the production cost.
    cheap_hash: bool = False


# DESIGN.md §6: S 10K users / 300K follows, M 100K / 5M, L 1M / 20M. The celebrity threshold is scaled so a
# profile has a few users above it (S: ~5K followers at the top, M: ~50K, L: ~200K).
PROFILES = {
    "tiny": Profile("tiny", 400, 10, 1, 8, 100, cheap_hash=True),
    "S": Profile("S", 10_000, 30, 3, 8, 2_000),
    "M": Profile("M", 100_000, 50, 5, 8, 10_000),
    "L": Profile("L", 1_000_000, 20, 5, 8, 10_000),
}

CHEAP_ARGON2 = {
    "GOODNIGHT_ARGON2_TIME_COST": "1",
    "GOODNIGHT_ARGON2_MEMORY_KIB": "1024",
    "GOODNIGHT_ARGON2_PARALLELISM": "1",
}


def source_digest() -> str:
    """A digest of goodnight seed's code and of the migrations: the dataset depends on both."""
    package = REPO / "src" / "goodnight"
    digest = hashlib.sha256()
    for path in sorted([*package.glob("seed/*.py"), *package.glob("migrations/versions/*.py")]):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class Prepared:
    database: str  # the database this run works on
    summary: dict[str, Any]
    reused: bool
    seed_seconds: float | None
    prepare_seconds: float
    seed_command: str
    cache: str | None


class Datasets:
    def __init__(
        self,
        postgres: Postgres,
        data_dir: Path,
        prefix: str,
        profile: Profile,
        *,
        seed: int,
        password: str,
        base_settings: dict[str, str],
    ) -> None:
        self.postgres = postgres
        self.profile = profile
        self.seed = seed
        self.password = password
        self.base_settings = base_settings
        self.template = f"{prefix}_{profile.name.lower()}_seed"
        self.run_database = f"{prefix}_{profile.name.lower()}_run"
        self.cache_dir = data_dir / profile.name
        self.meta_path = self.cache_dir / "meta.json"
        self.snapshot = self.cache_dir / "dump.rdb"

    def parameters(self) -> dict[str, Any]:
        """What the cached dataset must have been made with to be reused (the generator's and the schema's
        source included, so changing either seeds again)."""
        return {
            **asdict(self.profile),
            "seed": self.seed,
            "password": self.password,
            "generator": source_digest(),
        }

    def seed_argv(self, summary_path: Path) -> list[str]:
        profile = self.profile
        return [
            goodnight_executable(),
            "seed",
            "--users",
            str(profile.users),
            "--avg-followings",
            f"{profile.avg_followings:g}",
            "--celebrities",
            str(profile.celebrities),
            "--days",
            str(profile.days),
            "--password",
            self.password,
            "--seed",
            str(self.seed),
            "--summary-json",
            str(summary_path),
        ]

    def seed_env(self, database: str, redis: RedisServer) -> dict[str, str]:
        env = {
            **self.base_settings,
            "GOODNIGHT_DATABASE_URL": self.postgres.url(database),
            "GOODNIGHT_REDIS_URL": redis.url,
        }
        if self.profile.cheap_hash:
            env.update(CHEAP_ARGON2)
        return env

    def seed_command(self, summary_path: Path) -> str:
        shown = {
            name: ("<secret>" if name == "GOODNIGHT_JWT_SECRET" else value)
            for name, value in self.seed_env(self.template, RedisServer(Path("."), port=0)).items()
            if name != "GOODNIGHT_REDIS_URL"
        }
        shown["GOODNIGHT_REDIS_URL"] = "redis://127.0.0.1:<private port>/0"
        argv = self.seed_argv(summary_path)
        return command_line(["goodnight", *argv[1:]], shown)

    def cached(self, max_age_hours: float) -> dict[str, Any] | None:
        """The cached dataset's metadata if it can be reused, else None."""
        try:
            meta = json.loads(self.meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if meta.get("parameters") != self.parameters() or not self.snapshot.exists():
            return None
        anchor = datetime.fromisoformat(meta["summary"]["anchor"])
        age_hours = (datetime.now(UTC) - anchor).total_seconds() / 3600
        if age_hours > max_age_hours or not self.postgres.exists(self.template):
            return None
        return dict(meta)

    def prepare(
        self, redis: RedisServer, *, cache: bool, reseed: bool, max_age_hours: float, log_dir: Path
    ) -> Prepared:
        """Fill ``self.run_database`` and the (not yet started) private Redis; then start that Redis."""
        started = time.perf_counter()
        summary_path = log_dir / "seed-summary.json"
        command = self.seed_command(summary_path)
        if not cache:
            redis.start()
            self.postgres.create(self.run_database)
            seconds = self._seed(self.run_database, redis, summary_path, log_dir)
            summary = json.loads(summary_path.read_text())
            return Prepared(
                self.run_database, summary, False, seconds, time.perf_counter() - started, command, None
            )
        meta = None if reseed else self.cached(max_age_hours)
        if meta is not None:
            print(f"reusing the cached {self.profile.name} dataset (anchored at {meta['summary']['anchor']})")
            shutil.copyfile(self.snapshot, redis.snapshot)
            redis.start()
            self.postgres.create(self.run_database, template=self.template)
            return Prepared(
                self.run_database,
                meta["summary"],
                True,
                meta.get("seed_seconds"),
                time.perf_counter() - started,
                # The same flags as the seeding run's, naming this run's folder (which results publish as a
                # placeholder) rather than that run's, long gone.
                command,
                str(self.cache_dir),
            )
        redis.start()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.meta_path.unlink(missing_ok=True)
        self.postgres.create(self.template)
        seconds = self._seed(self.template, redis, summary_path, log_dir)
        redis.save()
        shutil.copyfile(redis.snapshot, self.snapshot)
        summary = json.loads(summary_path.read_text())
        meta = {
            "parameters": self.parameters(),
            "summary": summary,
            "seed_seconds": seconds,
            "seed_command": command,
            "seeded_at": datetime.now(UTC).isoformat(),
        }
        self.meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        self.postgres.create(self.run_database, template=self.template)
        return Prepared(
            self.run_database,
            summary,
            False,
            seconds,
            time.perf_counter() - started,
            command,
            str(self.cache_dir),
        )

    def _seed(self, database: str, redis: RedisServer, summary_path: Path, log_dir: Path) -> float:
        argv = self.seed_argv(summary_path)
        env = {**clean_environment(), **self.seed_env(database, redis)}
        print(f"seeding profile {self.profile.name} ({self.profile.users:,} users) into {database} ...")
        started = time.perf_counter()
        log_path = log_dir / "seed.log"
        with log_path.open("wb") as log:
            result = subprocess.run(  # noqa: S603
                argv, env=env, cwd=log_dir, stdout=log, stderr=subprocess.STDOUT, check=False
            )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise HarnessError(f"goodnight seed failed (exit {result.returncode}):\n{tail}")
        print(f"seeded in {seconds:.1f}s")
        return seconds

    def drop_run_database(self) -> None:
        self.postgres.drop(self.run_database)
