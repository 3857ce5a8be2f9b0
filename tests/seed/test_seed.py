"""``goodnight seed`` at a tiny profile: counts, determinism, graph shape, the summary, refusals, Redis."""

from __future__ import annotations

import json
import statistics
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import sqlalchemy as sa
from typer.testing import CliRunner

from goodnight.auth.passwords import Passwords
from goodnight.cli import app as cli_app
from goodnight.config import Settings, get_settings
from goodnight.db import Database
from goodnight.feed.position import parse_position
from goodnight.feed.window import REACH, WINDOW
from goodnight.main import create_app
from goodnight.models import Follow, SleepRecord, User
from goodnight.seed import SeedOptions, SeedRefused, run_seed
from goodnight.seed.ids import block_rng, uuid7_at
from goodnight.seed.records import RecordPlan
from goodnight.seed.users import UserPlan
from goodnight.timeline import keys
from goodnight.timeline.reader import TimelineReader
from goodnight.timeline.runtime import Timeline
from tests.support.databases import BACKENDS, TEST_JWT_SECRET, TestDatabase, create_database, settings_for
from tests.support.redis_server import RedisServer

THRESHOLD = 20  # celebrity threshold for the tiny profile
ANCHOR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
TINY = SeedOptions(
    users=200, avg_followings=8, celebrities=3, days=8, password="sleepy-password", seed=11, now=ANCHOR
)
REQUIRED_KEYS = {
    "users",
    "follows",
    "sleep_records",
    "light_user",
    "median_user",
    "heavy_user",
    "celebrity",
}


def seed_settings(url: str, **overrides: Any) -> Settings:
    return settings_for(url, celebrity_threshold=THRESHOLD, **overrides)


@dataclass
class Seeded:
    database: TestDatabase
    settings: Settings
    summary: dict[str, Any]


@pytest_asyncio.fixture(scope="module", params=BACKENDS)
async def seeded(request: pytest.FixtureRequest) -> AsyncIterator[Seeded]:
    database = await create_database(request.param)
    settings = seed_settings(database.url)
    summary = await run_seed(settings, TINY, show_progress=False)
    yield Seeded(database, settings, summary)
    await database.drop()


async def fetch(settings: Settings, query: Any) -> list[Any]:
    db = Database(settings)
    try:
        async with db.engine.connect() as connection:
            return list(await connection.execute(query))
    finally:
        await db.dispose()


async def scalar(settings: Settings, query: Any) -> Any:
    (row,) = await fetch(settings, query)
    return row[0]


async def dump(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three tables, in primary-key order; password hashes are left out (Argon2 salts
    each hash randomly, so the one shared hash differs between runs)."""
    user_columns = [column for column in User.__table__.columns if column.name != "password_hash"]
    tables: dict[str, tuple[Any, list[Any]]] = {
        "users": (sa.select(*user_columns), [User.id]),
        "follows": (sa.select(Follow), [Follow.follower_id, Follow.followed_id]),
        "sleep_records": (sa.select(SleepRecord), [SleepRecord.id]),
    }
    return {
        name: [tuple(row) for row in await fetch(settings, query.order_by(*order))]
        for name, (query, order) in tables.items()
    }


# --- counts, graph shape, records ---


async def test_counts_match_the_summary(seeded: Seeded) -> None:
    settings, summary = seeded.settings, seeded.summary
    assert (
        summary["users"] == TINY.users == await scalar(settings, sa.select(sa.func.count()).select_from(User))
    )
    active = sa.select(sa.func.count()).select_from(Follow).where(Follow.active.is_(True))
    assert summary["follows"] == await scalar(settings, active)
    assert summary["follow_rows"] == await scalar(settings, sa.select(sa.func.count()).select_from(Follow))
    assert summary["follow_rows"] > summary["follows"], "a few undone follows are part of the data"
    records = sa.select(sa.func.count()).select_from(SleepRecord)
    assert summary["sleep_records"] == await scalar(settings, records)
    opened = records.where(SleepRecord.clocked_out_at.is_(None))
    assert summary["open_records"] == await scalar(settings, opened)
    # Roughly the requested mean followings.
    assert 0.8 * TINY.avg_followings <= summary["follows"] / TINY.users <= 1.2 * TINY.avg_followings


async def test_usernames_and_the_shared_password(seeded: Seeded) -> None:
    rows = await fetch(seeded.settings, sa.select(User.username, User.username_key, User.password_hash))
    assert sorted(name for name, _, _ in rows) == sorted(f"user{n}" for n in range(1, TINY.users + 1))
    assert all(name == key for name, key, _ in rows)
    hashes = {password_hash for _, _, password_hash in rows}
    assert len(hashes) == 1, "the password is hashed once"
    passwords = Passwords(seeded.settings)
    assert await passwords.verify(hashes.pop(), TINY.password)


async def test_graph_shape(seeded: Seeded) -> None:
    settings = seeded.settings
    follows = await fetch(settings, sa.select(Follow.follower_id, Follow.followed_id, Follow.active))
    pairs = [(a, b) for a, b, _ in follows]
    assert len(pairs) == len(set(pairs)), "follows are unique"
    assert all(a != b for a, b in pairs), "nobody follows themselves"
    followers: dict[uuid.UUID, int] = {}
    followings: dict[uuid.UUID, int] = {}
    for a, b, active in follows:
        if active:
            followings[a] = followings.get(a, 0) + 1
            followers[b] = followers.get(b, 0) + 1
    users = await fetch(settings, sa.select(User.id, User.followers_count, User.followings_count))
    for user_id, followers_count, followings_count in users:
        assert followers_count == followers.get(user_id, 0)
        assert followings_count == followings.get(user_id, 0)
    in_degrees = sorted((count for _, count, _ in users), reverse=True)
    assert sum(count > THRESHOLD for count in in_degrees) >= TINY.celebrities
    # Power law: a few users hold a large share of all follows.
    top_tenth = sum(in_degrees[: len(in_degrees) // 10])
    assert top_tenth >= 0.35 * sum(in_degrees)
    assert in_degrees[0] >= 4 * statistics.mean(in_degrees)


async def test_nightly_records(seeded: Seeded) -> None:
    rows = await fetch(
        seeded.settings,
        sa.select(
            SleepRecord.user_id, SleepRecord.clocked_in_at, SleepRecord.clocked_out_at, SleepRecord.duration_s
        ),
    )
    per_user: dict[uuid.UUID, list[tuple[datetime, datetime | None, int | None]]] = {}
    for user_id, start, end, duration in rows:
        per_user.setdefault(user_id, []).append((start, end, duration))
    assert len(per_user) == TINY.users
    for records in per_user.values():
        records.sort(key=lambda record: record[0])
        assert TINY.days - 1 <= len(records) <= TINY.days + 1
        assert sum(end is None for _, end, _ in records) <= 1
        assert all(end is not None for _, end, _ in records[:-1]), "only the latest record may be open"
        for (start, end, duration), following in zip(records, [*records[1:], None], strict=True):
            assert start <= ANCHOR
            if end is None:
                continue
            assert duration == (end - start).total_seconds()
            assert 5 * 3600 <= duration <= 10 * 3600
            assert end <= ANCHOR
            if following is not None:
                assert end <= following[0], "nights do not overlap"
    nightly = [start for records in per_user.values() for start, end, _ in records if end is not None]
    minutes = [(start.hour * 60 + start.minute - 21 * 60) % (24 * 60) for start in nightly]
    assert all(0 <= minute <= 4 * 60 + 30 for minute in minutes), "bed times between 21:00 and 01:30 UTC"


@pytest.mark.parametrize("hour", [0, 3, 6, 9, 12, 18])
def test_a_few_users_are_asleep_now_at_any_hour(hour: int) -> None:
    anchor = datetime(2026, 11, 28, hour, tzinfo=UTC)
    ids = UserPlan(1000, 3, 0.25).ids
    plan = RecordPlan(ids, 8, anchor, seed=3, awake={0, 1})
    rows = [
        row for nights in range(8, 0, -1) for block in range(plan.blocks) for row in plan.night(nights, block)
    ]
    rows += [row for block in range(plan.blocks) for row in plan.asleep_now(block)]
    asleep = [row[1] for row in rows if row[3] is None]
    assert 0 < len(asleep) <= 0.05 * len(ids)
    assert len(set(asleep)) == len(asleep)
    assert not {ids[0], ids[1]} & set(asleep)


async def test_summary_names_the_users_a_load_test_needs(seeded: Seeded) -> None:
    summary = seeded.summary
    assert summary.keys() >= REQUIRED_KEYS
    users = {
        name: (followers, followings)
        for name, followers, followings in await fetch(
            seeded.settings, sa.select(User.username, User.followers_count, User.followings_count)
        )
    }
    assert abs(users[summary["light_user"]][1] - 10) <= 2
    assert users[summary["heavy_user"]][1] == max(followings for _, followings in users.values())
    assert users[summary["celebrity"]][0] == max(followers for followers, _ in users.values())
    assert users[summary["median_user"]][1] == statistics.median_low(f for _, f in users.values())
    assert summary["people"]["celebrity"]["followers"] == users[summary["celebrity"]][0]
    assert set(summary["celebrities"]) == {name for name, (f, _) in users.items() if f > THRESHOLD}
    assert summary["phases"]["follows"]["rows"] == summary["follow_rows"]
    assert summary["password"] == TINY.password


async def test_schema_is_intact_after_loading(seeded: Seeded) -> None:
    """Every index and constraint a migrated database has is there after the load (PostgreSQL drops the
    secondary ones while loading and rebuilds them)."""
    fresh = await create_database(seeded.database.backend)
    try:
        assert await structures(seeded.settings) == await structures(seed_settings(fresh.url))
    finally:
        await fresh.drop()


async def structures(settings: Settings) -> dict[str, Any]:
    if settings.database_url.startswith("postgresql"):
        rows = await fetch(
            settings,
            sa.text(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
                " UNION ALL SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                " FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2, 3"
            ),
        )
        return {"postgresql": [tuple(row) for row in rows]}

    def inspect(connection: sa.Connection) -> dict[str, Any]:
        inspector = sa.inspect(connection)

        def named(items: list[Any]) -> list[str]:
            return sorted(repr(sorted(item.items(), key=str)) for item in items)

        return {
            table: [
                named(inspector.get_indexes(table)),
                named(inspector.get_foreign_keys(table)),
                named(inspector.get_unique_constraints(table)),
                inspector.get_pk_constraint(table),
            ]
            for table in inspector.get_table_names()
        }

    db = Database(settings)
    try:
        async with db.engine.connect() as connection:
            found: dict[str, Any] = await connection.run_sync(inspect)
            return found
    finally:
        await db.dispose()


# --- determinism ---


async def test_same_seed_same_data_on_every_backend(seeded: Seeded) -> None:
    """A second run with the same seed into a fresh SQLite database reproduces every row of the first run,
    whatever backend (COPY or executemany) that first run loaded."""
    again = await create_database("sqlite")
    try:
        summary = await run_seed(seed_settings(again.url), TINY, show_progress=False)
        assert await dump(seed_settings(again.url)) == await dump(seeded.settings)
        for key in (*REQUIRED_KEYS, "celebrities", "people", "open_records"):
            assert summary[key] == seeded.summary[key]
    finally:
        await again.drop()


async def test_another_seed_gives_other_data() -> None:
    first, second = await create_database("sqlite"), await create_database("sqlite")
    try:
        await run_seed(seed_settings(first.url), TINY, show_progress=False)
        await run_seed(seed_settings(second.url), replace(TINY, seed=12), show_progress=False)
        one, other = await dump(seed_settings(first.url)), await dump(seed_settings(second.url))
        assert one["users"] != other["users"]
        assert one["follows"] != other["follows"]
    finally:
        await first.drop()
        await second.drop()


def test_generated_ids_are_uuid7_and_time_ordered() -> None:
    rng = block_rng(1, "test", 0)
    ids = [uuid7_at(1_700_000_000_000 + n, rng) for n in range(1000)]
    assert all(value.version == 7 and value.variant == uuid.RFC_4122 for value in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert int.from_bytes(ids[0].bytes[:6]) == 1_700_000_000_000


# --- refusing ---


async def test_refuses_a_database_that_has_users(seeded: Seeded) -> None:
    with pytest.raises(SeedRefused, match="already has users"):
        await run_seed(seeded.settings, TINY, show_progress=False)
    assert await scalar(seeded.settings, sa.select(sa.func.count()).select_from(User)) == TINY.users


async def test_refuses_impossible_celebrities() -> None:
    settings = settings_for("sqlite+aiosqlite:///:memory:", celebrity_threshold=TINY.users)
    with pytest.raises(SeedRefused, match="GOODNIGHT_CELEBRITY_THRESHOLD"):
        await run_seed(settings, TINY, show_progress=False)


# --- the command line ---


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("GOODNIGHT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'seed.db'}")
    monkeypatch.setenv("GOODNIGHT_CELEBRITY_THRESHOLD", str(THRESHOLD))
    monkeypatch.setenv("GOODNIGHT_JWT_SECRET", TEST_JWT_SECRET)
    monkeypatch.setenv("GOODNIGHT_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("GOODNIGHT_ARGON2_MEMORY_KIB", "8")
    monkeypatch.setenv("GOODNIGHT_ARGON2_PARALLELISM", "1")
    monkeypatch.delenv("GOODNIGHT_REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def seed_command(summary: Path | None = None) -> list[str]:
    command = ["seed", "--users", "120", "--avg-followings", "6", "--celebrities", "2", "--days", "3"]
    command += ["--password", "sleepy-password", "--seed", "5", "--now", ANCHOR.strftime("%Y-%m-%dT%H:%M:%S")]
    return command + (["--summary-json", str(summary)] if summary is not None else [])


def test_command_writes_the_summary_then_refuses_to_run_again(cli_env: Path) -> None:
    summary_path = cli_env / "out" / "summary.json"
    result = CliRunner().invoke(cli_app, seed_command(summary_path))
    assert result.exit_code == 0, result.output
    assert "seeded 120 users" in result.output
    summary = json.loads(summary_path.read_text())
    assert summary.keys() >= REQUIRED_KEYS
    assert summary["users"] == 120
    assert isinstance(summary["follows"], int)
    assert isinstance(summary["sleep_records"], int)
    for key in ("light_user", "median_user", "heavy_user", "celebrity"):
        assert summary[key].startswith("user")
    assert summary["anchor"] == ANCHOR.isoformat()

    again = CliRunner().invoke(cli_app, seed_command())
    assert again.exit_code == 2
    assert "already has users" in again.output


def test_command_refuses_bad_parameters(cli_env: Path) -> None:
    result = CliRunner().invoke(cli_app, [*seed_command()[:-2], "--password", "short"])
    assert result.exit_code == 2
    assert "8 to 128 characters" in result.output


# --- Redis timelines ---


@pytest.fixture(scope="module")
def seed_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_timelines_are_built_and_serve_the_same_feed_as_sql(
    backend: str, seed_redis: RedisServer
) -> None:
    database = await create_database(backend)
    settings = seed_settings(database.url, redis_url=seed_redis.url, embedded_worker=False)
    try:
        summary = await run_seed(settings, replace(TINY, clear_redis=True), show_progress=False)
        timelines = summary["timelines"]
        assert timelines["readers"] == summary["active_users"]
        assert timelines["entries"] > 0
        cached_app, sql_app = create_app(settings), create_app(replace_settings(settings, redis_url=None))
        async with cached_app.router.lifespan_context(cached_app), sql_app.router.lifespan_context(sql_app):
            timeline: Timeline = cached_app.state.services.timeline
            users = {name: uuid.UUID(person["id"]) for name, person in summary["people"].items()}
            celebrities = await timeline.store.celebrities.members()
            assert celebrities == {
                user_id
                for (user_id,) in await fetch(
                    settings, sa.select(User.id).where(User.followers_count > THRESHOLD)
                )
            }
            for reader in users.values():
                await same_feed(cached_app, sql_app, timeline, reader)
                await same_as_rebuild(timeline.reader, settings, reader)
            await timeline.reader.drain_background()
            assert timeline.reader.declined == 0, "every page came from Redis"
    finally:
        await database.drop()


def replace_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update=changes)


async def whole_feed(app: Any, reader: uuid.UUID, per_page: int) -> list[dict[str, Any]]:
    token = app.state.services.tokens.issue(reader).token
    items: list[dict[str, Any]] = []
    cursor = None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver/api/v1") as client:
        while True:
            params: dict[str, Any] = {"per_page": per_page, **({"cursor": cursor} if cursor else {})}
            page = await client.get(
                "/sleep_records/followings", params=params, headers={"Authorization": f"Bearer {token}"}
            )
            assert page.status_code == 200, page.text
            items.extend(page.json()["data"])
            cursor = page.json()["pagination"]["next_cursor"]
            if cursor is None:
                return items


async def same_feed(cached_app: Any, sql_app: Any, timeline: Timeline, reader: uuid.UUID) -> None:
    served = timeline.reader.served
    expected = await whole_feed(sql_app, reader, per_page=25)
    actual = await whole_feed(cached_app, reader, per_page=25)
    assert actual == expected
    assert expected, "the reader follows someone who slept this week"
    assert timeline.reader.served > served, "the page came from Redis"


async def same_as_rebuild(reader: TimelineReader, settings: Settings, user_id: uuid.UUID) -> None:
    """The bulk-built timeline holds what Rebuilds.rebuild puts there, except celebrities' records
    (rebuild loads them too; the seed, like fanout, leaves them to the read-time merge), give or take a
    record crossing the window's edge in the seconds between the two."""
    now = datetime.now(UTC)
    days = keys.bucket_days(now - REACH, now)

    async def snapshot() -> dict[bytes, str]:
        redis = reader.store.redis
        found: dict[bytes, str] = {}
        for day in days:
            for member in await redis.zrange(keys.bucket_key(user_id, day), 0, -1):
                found[member] = str(day)
        return found

    async def authors(members: Iterable[bytes]) -> dict[uuid.UUID, tuple[datetime, int]]:
        ids = [parse_position(member)[1] for member in members]
        query = (
            sa.select(SleepRecord.id, SleepRecord.clocked_in_at, User.followers_count)
            .join(User, User.id == SleepRecord.user_id)
            .where(SleepRecord.id.in_(ids))
        )
        return {record_id: (start, followers) for record_id, start, followers in await fetch(settings, query)}

    built = await snapshot()
    assert built, "the reader follows someone who slept this week"
    assert await reader.store.redis.exists(keys.marker_key(user_id))
    assert await reader.rebuilds.rebuild(user_id)
    rebuilt = await snapshot()
    assert all(rebuilt.get(member) == day for member, day in built.items() if member in rebuilt)
    assert all(followers <= THRESHOLD for _, followers in (await authors(built)).values())
    extra = await authors(rebuilt.keys() - built.keys())
    assert all(followers > THRESHOLD for _, followers in extra.values()), "only celebrities' records"
    edge = datetime.now(UTC) - WINDOW + timedelta(minutes=5)
    left_out = await authors(built.keys() - rebuilt.keys())
    assert all(start < edge for start, _ in left_out.values()), "only records leaving the window"
