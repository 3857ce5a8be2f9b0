"""``goodnight seed``: the phases, their progress bars, and the summary a load test reads."""

from __future__ import annotations

import contextlib
import json
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from goodnight.auth.passwords import Passwords
from goodnight.config import Settings
from goodnight.db import Database
from goodnight.feed.window import WINDOW
from goodnight.migrate import upgrade_to_head
from goodnight.models import User
from goodnight.redis_client import RedisClient, connect
from goodnight.seed.graph import BLOCK, Degrees, FollowGraph, GraphError, count_block, empty_counts
from goodnight.seed.ids import block_rng
from goodnight.seed.load import Loader
from goodnight.seed.records import RECORD_COLUMNS, RecordPlan, naive
from goodnight.seed.resp import CommandSink, PipelineSink, RawRedis
from goodnight.seed.timelines import TimelineBuilder, clear_timeline_keys, has_timeline_keys
from goodnight.seed.users import USER_COLUMNS, Picks, UserPlan, username
from goodnight.timeline import activity

FOLLOW_COLUMNS = ("follower_id", "followed_id", "active", "followed_at", "created_at", "updated_at")
FOLLOW_TIMES = 4096  # distinct follow instants, shared by many rows (one datetime object each)
DEFAULT_ACTIVE_SHARE = 0.25


class SeedRefused(Exception):
    """The seed will not run (non-empty database, impossible parameters); nothing was written."""


@dataclass(frozen=True)
class SeedOptions:
    users: int
    avg_followings: float
    celebrities: int
    days: int
    password: str
    seed: int
    active_share: float = DEFAULT_ACTIVE_SHARE
    now: datetime | None = None  # the anchor; defaults to the current hour
    clear_redis: bool = False

    def anchor(self) -> datetime:
        moment = (self.now or datetime.now(UTC)).astimezone(UTC)
        return moment if self.now is not None else moment.replace(minute=0, second=0, microsecond=0)

    def validate(self) -> None:
        if self.users < 1:
            raise SeedRefused("--users must be at least 1")
        if not 1 <= self.days <= 365:
            raise SeedRefused("--days must be between 1 and 365")
        if not 8 <= len(self.password) <= 128:
            raise SeedRefused("--password must be 8 to 128 characters (what registration accepts)")
        if not 0.0 <= self.active_share <= 1.0:
            raise SeedRefused("--active-share must be between 0 and 1")


@dataclass
class Phase:
    seconds: float = 0.0
    rows: int = 0


@dataclass
class Report:
    """Progress bars on stderr, one per phase, and what each phase cost."""

    enabled: bool
    phases: dict[str, Phase] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not self.enabled,
        )

    @contextmanager
    def phase(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        task = self.progress.add_task(name, total=max(total, 1))
        record = self.phases.setdefault(name, Phase())
        started = time.perf_counter()

        def advance(amount: int) -> None:
            self.progress.advance(task, amount)

        try:
            yield advance
        finally:
            self.progress.update(task, completed=max(total, 1))
            record.seconds = round(time.perf_counter() - started, 3)

    def note(self, message: str) -> None:
        if self.enabled:
            self.progress.console.print(message)


async def run_seed(settings: Settings, options: SeedOptions, *, show_progress: bool = True) -> dict[str, Any]:
    """Fill an empty database (and Redis, when configured) with a generated dataset; returns the summary."""
    options.validate()
    try:
        FollowGraph.check(
            options.users, options.avg_followings, options.celebrities, settings.celebrity_threshold
        )
    except GraphError as exc:
        raise SeedRefused(str(exc)) from exc
    report = Report(show_progress)
    started = time.perf_counter()
    with report.phase("migrate", 1):
        await upgrade_to_head(settings)
    database = Database(settings)
    redis = connect(settings) if settings.redis_url else None
    try:
        await _preflight(database, redis, options, report)
        with report.progress:
            summary = await _seed(settings, options, database, redis, report)
    finally:
        if redis is not None:
            await redis.aclose()
        await database.dispose()
    summary["phases"] = {name: asdict(phase) for name, phase in report.phases.items()}
    summary["total_seconds"] = round(time.perf_counter() - started, 3)
    summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return summary


async def _preflight(
    database: Database, redis: RedisClient | None, options: SeedOptions, report: Report
) -> None:
    async with database.engine.connect() as connection:
        existing = await connection.scalar(sa.select(User.id).limit(1))
    if existing is not None:
        raise SeedRefused(
            "the database already has users: goodnight seed only fills an empty database "
            "(drop it, or point GOODNIGHT_DATABASE_URL at a new one)"
        )
    if redis is not None and await has_timeline_keys(redis):
        if not options.clear_redis:
            raise SeedRefused(
                "Redis already holds Goodnight keys (gn:*): pass --clear-redis to delete them first "
                "(only gn:* keys are deleted), or point GOODNIGHT_REDIS_URL at an empty Redis"
            )
        removed = await clear_timeline_keys(redis)
        report.note(f"deleted {removed} gn:* keys from Redis")


async def _seed(
    settings: Settings,
    options: SeedOptions,
    database: Database,
    redis: RedisClient | None,
    report: Report,
) -> dict[str, Any]:
    anchor = options.anchor()
    users = options.users
    people = UserPlan(users, options.seed, options.active_share)
    followings, followers = empty_counts(users), empty_counts(users)
    follows = undone = 0
    with report.phase("graph", (users + BLOCK - 1) // BLOCK) as advance:
        graph = FollowGraph(
            users, options.avg_followings, options.celebrities, settings.celebrity_threshold, options.seed
        )
        for block in range(graph.blocks):
            active, inactive = count_block(graph, block, followings, followers)
            follows, undone = follows + active, undone + inactive
            advance(1)
    report.phases["graph"].rows = follows + undone
    degrees = Degrees(followings, followers, follows, undone)
    picks = people.pick(degrees)
    password_hash = await Passwords(settings).hash(options.password)

    async with database.engine.connect() as connection:
        loader = Loader(connection)
        await loader.start()
        people.ids = loader.native_ids(people.ids)
        await loader.defer_secondary_structures()
        try:
            with report.phase("users", users) as advance:
                for block in range(graph.blocks):
                    rows = list(
                        people.rows(
                            block,
                            degrees=degrees,
                            password_hash=password_hash,
                            anchor=anchor,
                            days=options.days,
                            active_days=settings.active_days,
                            picks=picks,
                        )
                    )
                    await loader.add("users", USER_COLUMNS, rows)
                    advance(len(rows))
                await loader.flush()
            report.phases["users"].rows = loader.written.get("users", 0)
            with report.phase("follows", follows + undone) as advance:
                await _load_follows(graph, people, anchor, loader, advance)
            report.phases["follows"].rows = loader.written.get("follows", 0)
            records = RecordPlan(people.ids, options.days, anchor, options.seed, picks.as_set())
            stats = {"open": 0, "in_window": 0}
            with report.phase("records", records.expected) as advance:
                await _load_records(records, loader, advance, stats, anchor)
            report.phases["records"].rows = loader.written.get("sleep_records", 0)
        except BaseException:
            # Leave the schema whole even so (best effort: the partial data is the operator's to drop).
            with contextlib.suppress(Exception):
                await loader.rebuild_secondary_structures()
            raise
        with report.phase("indexes", len(loader.deferred.names) + 1) as advance:
            await loader.rebuild_secondary_structures(lambda _name: advance(1))
            await loader.analyze()
            advance(1)
    timelines: dict[str, Any] | None = None
    if redis is not None:
        timelines = await _build_timelines(settings, database, redis, report)
    return _summary(settings, options, anchor, people, degrees, picks, loader.written, stats, timelines)


async def _load_follows(
    graph: FollowGraph, people: UserPlan, anchor: datetime, loader: Loader, advance: Callable[[int], None]
) -> None:
    times_rng = block_rng(graph.seed, "follow-times", 0)
    base = anchor.astimezone(UTC).replace(tzinfo=None)
    times = [base - timedelta(seconds=times_rng.randrange(3600, 180 * 86400)) for _ in range(FOLLOW_TIMES)]
    ids = people.ids
    for block in range(graph.blocks):
        rng = block_rng(graph.seed, "follow-rows", block)
        pick = rng.getrandbits
        rows: list[tuple[Any, ...]] = []
        for edges in graph.block(block):
            follower = ids[edges.follower]
            for followee in edges.followees:
                at = times[pick(12)]
                rows.append((follower, ids[followee], True, at, at, at))
            if edges.undone >= 0:
                at = times[pick(12)]
                rows.append((follower, ids[edges.undone], False, at, at, at))
        await loader.add("follows", FOLLOW_COLUMNS, rows)
        advance(len(rows))
    await loader.flush()


async def _load_records(
    records: RecordPlan,
    loader: Loader,
    advance: Callable[[int], None],
    stats: dict[str, int],
    anchor: datetime,
) -> None:
    window_start = naive(int((anchor - WINDOW).timestamp()))

    async def add(rows: list[tuple[Any, ...]]) -> None:
        for row in rows:
            if row[3] is None:
                stats["open"] += 1
            elif row[2] >= window_start:
                stats["in_window"] += 1
        await loader.add("sleep_records", RECORD_COLUMNS, rows)

    for nights_ago in range(records.days, 0, -1):  # oldest first: each night follows the previous one
        for block in range(records.blocks):
            rows = list(records.night(nights_ago, block))
            await add(rows)
            advance(len(rows))
    for block in range(records.blocks):
        await add(list(records.asleep_now(block)))
    await loader.flush()


async def _build_timelines(
    settings: Settings, database: Database, redis: RedisClient, report: Report
) -> dict[str, Any]:
    marker_ttl = activity.marker_ttl(settings)
    sink: CommandSink
    if settings.redis_cluster or settings.redis_url is None:
        sink = PipelineSink(redis)
    else:
        sink = await RawRedis.open(settings.redis_url)
    async with database.engine.connect() as connection:
        builder = TimelineBuilder(
            connection,
            redis,
            sink,
            threshold=settings.celebrity_threshold,
            active_days=settings.active_days,
            marker_ttl=marker_ttl,
        )
        await builder.load_celebrities()
        readers = await builder.readers()
        try:
            with report.phase("renderings", await builder.count_renderings()) as advance:
                await builder.store_renderings(advance)
            with report.phase("timelines", len(readers)) as advance:
                stats = await builder.build(readers, advance)
        finally:
            await sink.close()
    report.phases["timelines"].rows = stats.entries
    report.phases["renderings"].rows = stats.renderings
    result = asdict(stats)
    used = stats.redis_memory_after - stats.redis_memory_renderings
    result["redis_bytes_per_entry"] = round(used / stats.entries, 1) if stats.entries else None
    used = stats.redis_memory_renderings - stats.redis_memory_before
    result["redis_bytes_per_rendering"] = round(used / stats.renderings, 1) if stats.renderings else None
    return result


def _summary(
    settings: Settings,
    options: SeedOptions,
    anchor: datetime,
    people: UserPlan,
    degrees: Degrees,
    picks: Picks,
    written: dict[str, int],
    stats: dict[str, int],
    timelines: dict[str, Any] | None,
) -> dict[str, Any]:
    def person(number: int) -> dict[str, Any]:
        return {
            "username": username(number),
            "id": str(people.ids[number]),
            "followings": degrees.followings[number],
            "followers": degrees.followers[number],
        }

    threshold = settings.celebrity_threshold
    celebrities = [username(n) for n in range(options.users) if degrees.followers[n] > threshold]
    return {
        "users": written.get("users", 0),
        "follows": degrees.follows,
        "sleep_records": written.get("sleep_records", 0),
        "light_user": username(picks.light),
        "median_user": username(picks.median),
        "heavy_user": username(picks.heavy),
        "celebrity": username(picks.celebrity),
        "password": options.password,
        "seed": options.seed,
        "parameters": {
            "users": options.users,
            "avg_followings": options.avg_followings,
            "celebrities": options.celebrities,
            "days": options.days,
            "active_share": options.active_share,
            "celebrity_threshold": threshold,
            "active_days": settings.active_days,
        },
        "anchor": anchor.isoformat(),
        "backend": sa.engine.make_url(settings.database_url).get_backend_name(),
        "follow_rows": written.get("follows", 0),
        "undone_follows": degrees.undone,
        "open_records": stats["open"],
        "records_in_window": stats["in_window"],
        "active_users": sum(people.active),
        "celebrities": celebrities,
        "people": {
            "light_user": person(picks.light),
            "median_user": person(picks.median),
            "heavy_user": person(picks.heavy),
            "celebrity": person(picks.celebrity),
        },
        "timelines": timelines,
    }


def write_summary(summary: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
