"""The Redis timeline against the SQL feed, driven by random programs of API calls (issue 3's equivalence).

Hypothesis writes programs of register / follow / unfollow / clock-in / clock-out (back-dated over the last
8 days, so some records fall outside the 7-day window) / logged nights (anywhere in those days, often before
the user's later records; refused when they overlap one) / delete / rename / account deletion calls on 5-8
users, biased towards a few
"stars" so that users cross the celebrity threshold (3 in the tests) and fall back below it: ``Crowd`` makes
several users follow one star, ``Desert`` makes its followers leave until a few remain. A star that drops to
two followers and then clocks out (or logs a night) takes the former-celebrity backfill path of
``Fanout.sleep_completed``.

Every write goes through the timeline app (``timeline_api``); the SQL app (``api``, same database) is the
truth.

* After each follow, unfollow and delete, WITHOUT draining the outbox, the actor reads their feed (and, after
  a delete, a rename or an account deletion, the owner's followers read theirs). When the op "settled" first
  (drained the outbox before writing), the page from Redis must equal the SQL one exactly: read-your-writes.
  Otherwise other clock-outs may still be on their way, so the Redis feed must be an in-order subsequence of
  the SQL feed (items compared whole, names included), and the followed, unfollowed or deleted user's part of
  it must already be exact.
* At checkpoints (and at the end) the outbox is drained and every reader warmed (a cold timeline is answered
  from SQL while it is rebuilt); then every page of every user's feed, at several page sizes including 1,
  must equal the SQL feed, and every one of those pages must have been served from Redis.

Times are epoch milliseconds relative to a "now" taken when an example starts; no clock-in lies within
``MARGIN`` of the 7-day boundary, so the time an example takes cannot move a record across the window.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from goodnight.redis_client import Breaker
from goodnight.timeline import keys
from tests.support.api import Api, Member
from tests.support.apps import AppTimeline
from tests.support.databases import truncate
from tests.support.millis import DAY, HOUR, MARGIN, MINUTE, SECOND, WINDOW, iso, now_ms

OLDEST = 8 * DAY
MIN_USERS, MAX_USERS = 5, 8  # up front, and at most after ``Register`` ops
STARS = (0, 1)  # the users most follows go to
CHECK_PAGE_SIZES = (1, 3, 100)
MAX_EXAMPLES = 12


# --- Programs -----------------------------------------------------------------------------------------------
# User references are indexes modulo the number of users; records are picked by index modulo what exists.


@dataclass(frozen=True)
class Sleep:
    """A night: clock in ``ago`` ms before now (or right after the actor's last record), clock out later;
    or, ``logged``, the night ``ago`` ms ago sent whole to POST /sleep_records, wherever it falls."""

    actor: int
    ago: int
    duration: int
    logged: bool = False


@dataclass(frozen=True)
class ClockIn:
    """Clock in and stay open (a later ``ClockOut`` or ``Sleep`` of the same user closes it)."""

    actor: int
    ago: int


@dataclass(frozen=True)
class ClockOut:
    actor: int
    duration: int


@dataclass(frozen=True)
class Follow:
    actor: int
    target: int
    settle: bool  # drain the outbox before the write, so the actor's next read must equal SQL exactly
    per_page: int


@dataclass(frozen=True)
class Unfollow:
    pick: int  # which of the active follows (sorted) ends
    settle: bool
    per_page: int


@dataclass(frozen=True)
class Crowd:
    """Up to ``count`` users who do not follow ``target`` yet do, starting at ``offset``."""

    target: int
    count: int
    offset: int
    settle: bool


@dataclass(frozen=True)
class Desert:
    """The followers of ``target`` unfollow it until ``keep`` remain."""

    target: int
    keep: int
    settle: bool


@dataclass(frozen=True)
class Delete:
    actor: int
    index: int  # which of the actor's live records (open ones included)
    settle: bool
    per_page: int


@dataclass(frozen=True)
class Rename:
    actor: int
    name: str | None
    settle: bool
    per_page: int


@dataclass(frozen=True)
class DeleteAccount:
    """A user leaves (a star, as often as not: a celebrity's deletion)."""

    actor: int
    settle: bool
    per_page: int


@dataclass(frozen=True)
class Read:
    """A feed read (warms the reader's timeline on the way)."""

    actor: int
    per_page: int


@dataclass(frozen=True)
class Register:
    """A newcomer (while there are fewer than ``MAX_USERS``)."""


@dataclass(frozen=True)
class Drain:
    """Let the outbox worker catch up, without checking anything."""


@dataclass(frozen=True)
class Checkpoint:
    """Drain the outbox, warm every reader, then every page of every feed must equal SQL's."""


Op = (
    Sleep
    | ClockIn
    | ClockOut
    | Follow
    | Unfollow
    | Crowd
    | Desert
    | Delete
    | Rename
    | DeleteAccount
    | Read
    | Register
    | Drain
    | Checkpoint
)


@dataclass(frozen=True)
class Program:
    users: int  # registered up front
    ops: tuple[Op, ...]


users = st.integers(0, MAX_USERS - 1)
stars = st.one_of(st.sampled_from(STARS), users)
page_sizes = st.sampled_from([1, 2, 100])
# Clock-ins anywhere in the last 8 days, now and then just inside or just outside the week (beyond MARGIN).
agos = st.one_of(
    st.integers(HOUR, OLDEST),
    st.sampled_from([WINDOW - 3 * MINUTE, WINDOW + 3 * MINUTE, WINDOW - HOUR, WINDOW + HOUR, 2 * HOUR]),
)
# Exact hours (ties, ordered by id) and sub-second remainders (durations are floored to seconds).
durations = st.one_of(
    st.sampled_from([HOUR, 8 * HOUR, 7 * HOUR + 30 * MINUTE, 999, HOUR + 999]),
    st.integers(1, 14 * HOUR),
)
OP_KINDS = (
    *["sleep"] * 8,
    *["clock_in"] * 1,
    *["clock_out"] * 1,
    *["follow"] * 5,
    *["unfollow"] * 2,
    *["crowd"] * 3,
    *["desert"] * 3,
    *["delete"] * 2,
    *["rename"] * 1,
    *["delete_account"] * 1,
    *["read"] * 2,
    *["register"] * 1,
    *["drain"] * 1,
    *["checkpoint"] * 1,
    *["fame"] * 2,
)


@st.composite
def fame(draw: st.DrawFn) -> tuple[Op, ...]:
    """A star's rise and fall: followed past the threshold, sleeps, deserted (to 3 at most), sleeps again;
    or, now and then, leaves at the height of fame (a celebrity's account deletion)."""
    star = draw(stars)
    settle = st.booleans()
    logged = st.integers(0, 2).map(lambda pick: pick == 0)
    rise: list[Op] = [
        Crowd(star, 4, draw(users), draw(settle)),
        Sleep(star, draw(agos), draw(durations), draw(logged)),
    ]
    fall: list[Op] = [
        Desert(star, draw(st.integers(0, 3)), draw(settle)),
        Sleep(star, draw(agos), draw(durations), draw(logged)),
    ]
    pause = [Drain()] if draw(st.booleans()) else []
    if draw(st.integers(0, 3)) == 0:
        return (*rise, *pause, DeleteAccount(star, draw(settle), draw(page_sizes)))
    return (*rise, *pause, *fall)


@st.composite
def operations(draw: st.DrawFn) -> tuple[Op, ...]:
    kind = draw(st.sampled_from(OP_KINDS))
    if kind == "fame":
        return draw(fame())
    return (draw(single_operations(kind)),)


@st.composite
def single_operations(draw: st.DrawFn, kind: str) -> Op:
    if kind == "sleep":
        return Sleep(draw(st.one_of(stars, users)), draw(agos), draw(durations), draw(st.integers(0, 2)) == 0)
    if kind == "clock_in":
        return ClockIn(draw(users), draw(agos))
    if kind == "clock_out":
        return ClockOut(draw(users), draw(durations))
    if kind == "follow":
        return Follow(draw(users), draw(stars), draw(st.booleans()), draw(page_sizes))
    if kind == "unfollow":
        return Unfollow(draw(st.integers(0, 30)), draw(st.booleans()), draw(page_sizes))
    if kind == "crowd":
        return Crowd(draw(stars), draw(st.integers(1, 5)), draw(users), draw(st.booleans()))
    if kind == "desert":
        return Desert(draw(stars), draw(st.integers(0, 3)), draw(st.booleans()))
    if kind == "delete":
        return Delete(draw(users), draw(st.integers(0, 5)), draw(st.booleans()), draw(page_sizes))
    if kind == "rename":
        name = draw(st.sampled_from([None, "Ada", "Zoë Ø"]))
        return Rename(draw(st.one_of(stars, users)), name, draw(st.booleans()), draw(page_sizes))
    if kind == "delete_account":
        return DeleteAccount(draw(st.one_of(stars, users)), draw(st.booleans()), draw(page_sizes))
    if kind == "read":
        return Read(draw(users), draw(page_sizes))
    if kind == "register":
        return Register()
    if kind == "drain":
        return Drain()
    return Checkpoint()


def flatten(parts: list[tuple[Op, ...]]) -> tuple[Op, ...]:
    return tuple(op for part in parts for op in part)


programs = st.builds(
    Program,
    users=st.integers(MIN_USERS, MAX_USERS - 1),
    ops=st.lists(operations(), min_size=8, max_size=20).map(flatten),
)


# --- The runner ---------------------------------------------------------------------------------------------


@dataclass
class Record:
    id: str
    start: int
    end: int | None = None


@dataclass
class Person:
    member: Member
    records: list[Record] = field(default_factory=list)  # live ones, in creation order
    deleted: bool = False

    @property
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(self.member.id)

    def open(self) -> Record | None:
        return next((r for r in self.records if r.end is None), None)

    def last_end(self) -> int | None:
        latest = max(self.records, key=lambda r: r.start, default=None)
        return None if latest is None else latest.end


def expect(response: httpx.Response, status: int) -> Any:
    request = response.request
    assert response.status_code == status, (
        f"{request.method} {request.url}: expected {status}, got {response.status_code} {response.text}"
    )
    return response.json() if response.content else None


def is_subsequence(part: list[dict[str, Any]], whole: list[dict[str, Any]]) -> bool:
    rest = iter(whole)
    return all(any(item == candidate for candidate in rest) for item in part)


def pages(items: int, per_page: int) -> int:
    return max(1, -(-items // per_page))


def by_author(items: list[dict[str, Any]], author: Member) -> list[dict[str, Any]]:
    return [item for item in items if item["user"]["id"] == author.id]


class Runner:
    def __init__(self, sql: Api, cached: Api, timeline: AppTimeline, engine: AsyncEngine, now: int) -> None:
        self.sql = sql
        self.cached = cached
        self.http = cached.client
        self.timeline = timeline
        self.engine = engine
        self.now = now
        self.people: list[Person] = []
        self.follows: set[tuple[int, int]] = set()  # (follower, followed), active only

    def present(self) -> list[int]:
        """Everyone whose account has not been deleted."""
        return [number for number, person in enumerate(self.people) if not person.deleted]

    def who(self, index: int) -> int:
        present = self.present()
        return present[index % len(present)]

    def differences(self, actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> str:
        """What the Redis feed lacks or adds, record by record, with each record's author."""
        index = {person.member.id: number for number, person in enumerate(self.people)}

        def show(items: list[dict[str, Any]]) -> str:
            return ", ".join(f"{i['id']} (user {index[i['user']['id']]}, {i['duration']} s)" for i in items)

        missing = [item for item in expected if item not in actual]
        extra = [item for item in actual if item not in expected]
        return f"missing from Redis: [{show(missing)}]; only in Redis: [{show(extra)}]"

    def followers(self, person: int) -> list[int]:
        return sorted(follower for follower, followed in self.follows if followed == person)

    async def run(self, op: Op) -> None:
        note(f"op: {op}")
        handlers: dict[type, Callable[[Any], Awaitable[None]]] = {
            Sleep: self.sleep,
            ClockIn: self.clock_in,
            ClockOut: self.clock_out,
            Follow: self.follow_op,
            Unfollow: self.unfollow_op,
            Crowd: self.crowd,
            Desert: self.desert,
            Delete: self.delete,
            Rename: self.rename,
            DeleteAccount: self.delete_account,
            Read: self.read,
        }
        if isinstance(op, Register):
            if len(self.present()) < MAX_USERS:
                self.people.append(Person(await self.cached.register()))
        elif isinstance(op, Drain):
            await self.drain()
        elif isinstance(op, Checkpoint):
            await self.checkpoint()
        else:
            await handlers[type(op)](op)

    # -- sleep --

    def off_the_edge(self, at: int) -> int:
        """A clock-in too close to the 7-day boundary, moved a little later."""
        boundary = self.now - WINDOW
        return boundary + MARGIN + 1 if abs(at - boundary) <= MARGIN else at

    def clock_in_time(self, person: Person, ago: int) -> int | None:
        """``ago`` before now, or right when the person's last record ends if that is later (touching is
        allowed); moved off the 7-day boundary; None when no valid time is left before now."""
        at = self.off_the_edge(max(self.now - ago, person.last_end() or 0))
        return at if at <= self.now - 2 * SECOND else None

    async def start(self, actor: int, ago: int) -> bool:
        person = self.people[actor]
        if person.open() is not None:
            return True
        at = self.clock_in_time(person, ago)
        if at is None:
            note(f"  user {actor} has no room left before now: no clock-in")
            return False
        response = await self.http.post(
            "/sleep_records/clock_in", json={"clocked_in_at": iso(at)}, headers=person.member.headers
        )
        data = expect(response, 201)
        person.records.append(Record(data["sleep_record"]["id"], at))
        note(f"  user {actor} clocks in at {iso(at)} ({(self.now - at) / DAY:.3f} days ago)")
        return True

    async def finish(self, actor: int, duration: int) -> None:
        person = self.people[actor]
        opened = person.open()
        if opened is None:
            return
        end = min(opened.start + duration, self.now)
        response = await self.http.post(
            "/sleep_records/clock_out", json={"clocked_out_at": iso(end)}, headers=person.member.headers
        )
        data = expect(response, 200)
        assert data["sleep_record"]["id"] == opened.id
        opened.end = end
        followers = len(self.followers(actor))
        event(f"clock-out by a user with {min(followers, 4)}{'+' if followers >= 4 else ''} followers")
        note(f"  user {actor} ({followers} followers) clocks out record {opened.id}, {data['duration']} s")

    async def log(self, actor: int, ago: int, duration: int) -> None:
        """A logged night, refused when it overlaps one of the person's records (an open one runs on)."""
        person = self.people[actor]
        start = self.off_the_edge(self.now - ago)
        end = min(start + duration, self.now - SECOND)
        if end <= start:
            return
        body = {"clocked_in_at": iso(start), "clocked_out_at": iso(end)}
        response = await self.http.post("/sleep_records", json=body, headers=person.member.headers)
        if any(r.start < end and (r.end is None or r.end > start) for r in person.records):
            expect(response, 422)
            note(f"  user {actor} cannot log {iso(start)} to {iso(end)}: it overlaps a record")
            return
        data = expect(response, 201)
        person.records.append(Record(data["id"], start, end))
        followers = len(self.followers(actor))
        event(f"a logged night by a user with {min(followers, 4)}{'+' if followers >= 4 else ''} followers")
        note(f"  user {actor} ({followers} followers) logs record {data['id']}, {iso(start)} to {iso(end)}")

    async def sleep(self, op: Sleep) -> None:
        actor = self.who(op.actor)
        if op.logged:
            await self.log(actor, op.ago, op.duration)
        elif await self.start(actor, op.ago):
            await self.finish(actor, op.duration)

    async def clock_in(self, op: ClockIn) -> None:
        await self.start(self.who(op.actor), op.ago)

    async def clock_out(self, op: ClockOut) -> None:
        await self.finish(self.who(op.actor), op.duration)

    async def delete(self, op: Delete) -> None:
        actor = self.who(op.actor)
        person = self.people[actor]
        if not person.records:
            return
        record = person.records[op.index % len(person.records)]
        await self.settle(op.settle)
        response = await self.http.delete(f"/sleep_records/{record.id}", headers=person.member.headers)
        expect(response, 204)
        person.records.remove(record)
        note(f"  user {actor} deletes record {record.id} ({'open' if record.end is None else 'completed'})")
        await self.check_reader(actor, settled=op.settle, per_page=op.per_page, gone=record.id)
        for follower in self.followers(actor):  # gone from every follower's next read, too
            await self.check_reader(follower, settled=op.settle, per_page=op.per_page, gone=record.id)

    # -- the account --

    async def rename(self, op: Rename) -> None:
        actor = self.who(op.actor)
        await self.settle(op.settle)
        expect(await self.cached.rename(self.people[actor].member, op.name), 200)
        note(f"  user {actor} is renamed {op.name!r}")
        # Unsettled, a page is an in-order part of SQL's, items compared whole: an old name would show.
        for follower in self.followers(actor):
            await self.check_reader(follower, settled=op.settle, per_page=op.per_page)

    async def delete_account(self, op: DeleteAccount) -> None:
        actor = self.who(op.actor)
        if len(self.present()) <= MIN_USERS - 2:
            return
        await self.settle(op.settle)
        followers = self.followers(actor)
        expect(await self.cached.delete_account(self.people[actor].member), 204)
        self.follows = {pair for pair in self.follows if actor not in pair}
        self.people[actor].deleted = True
        self.people[actor].records.clear()
        note(f"  user {actor} ({len(followers)} followers) deletes their account")
        event(
            f"an account deletion with {min(len(followers), 4)}{'+' if len(followers) >= 4 else ''} followers"
        )
        for follower in followers:  # none of theirs on any former follower's next read
            await self.check_reader(follower, settled=op.settle, per_page=op.per_page, author=actor)

    # -- follows --

    async def follow(self, actor: int, target: int, *, settle: bool, per_page: int) -> None:
        if actor == target or (actor, target) in self.follows:
            return
        await self.settle(settle)
        response = await self.http.post(
            f"/socials/follow/{self.people[target].member.id}", headers=self.people[actor].member.headers
        )
        expect(response, 201)
        self.follows.add((actor, target))
        count = len(self.followers(target))
        note(f"  user {actor} follows user {target} (now {count} followers)")
        if count > 3:
            event("a user has more followers than the celebrity threshold")
        await self.check_reader(actor, settled=settle, per_page=per_page, author=target)

    async def unfollow(self, actor: int, target: int, *, settle: bool, per_page: int) -> None:
        await self.settle(settle)
        response = await self.http.post(
            f"/socials/unfollow/{self.people[target].member.id}", headers=self.people[actor].member.headers
        )
        expect(response, 200)
        self.follows.discard((actor, target))
        note(f"  user {actor} unfollows user {target} (now {len(self.followers(target))} followers)")
        await self.check_reader(actor, settled=settle, per_page=per_page, author=target)

    async def follow_op(self, op: Follow) -> None:
        await self.follow(self.who(op.actor), self.who(op.target), settle=op.settle, per_page=op.per_page)

    async def unfollow_op(self, op: Unfollow) -> None:
        if self.follows:
            actor, target = sorted(self.follows)[op.pick % len(self.follows)]
            await self.unfollow(actor, target, settle=op.settle, per_page=op.per_page)

    async def crowd(self, op: Crowd) -> None:
        target = self.who(op.target)
        order = [self.who(op.offset + step) for step in range(len(self.present()))]
        fans = [p for p in order if p != target and (p, target) not in self.follows][: op.count]
        for fan in fans:
            await self.follow(fan, target, settle=op.settle, per_page=2)

    async def desert(self, op: Desert) -> None:
        target = self.who(op.target)
        followers = self.followers(target)
        for follower in followers[: max(len(followers) - op.keep, 0)]:
            await self.unfollow(follower, target, settle=op.settle, per_page=2)
        if len(followers) > 3 >= op.keep:
            event("a user falls back to the celebrity threshold or below")

    # -- checks --

    async def settle(self, settle: bool) -> None:
        if settle:
            await self.drain()

    async def celebrity_set(self) -> set[uuid.UUID]:
        members = await self.timeline.redis.smembers(keys.CELEBRITIES)
        return {uuid.UUID(bytes=member) for member in members if isinstance(member, bytes)}

    async def drain(self) -> None:
        """Run the outbox worker dry, noting when users join or leave the celebrity set on the way."""
        before = await self.celebrity_set()
        await self.timeline.worker.drain()
        after = await self.celebrity_set()
        if after - before:
            event("a clock-out put a user in the celebrity set")
        if before - after:
            event("a former celebrity's week was backfilled (it left the celebrity set)")

    async def is_warm(self, reader: Person) -> bool:
        """A read of this reader should come from Redis: the timeline is built, the celebrity set too."""
        found = await self.timeline.redis.exists(keys.marker_key(reader.uuid), keys.CELEBRITIES_READY)
        return int(found) == 2

    async def both_feeds(
        self, person: int, per_page: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
        """The SQL feed, the timeline app's feed, and whether every page of the latter came from Redis."""
        assert now_ms() - self.now < MARGIN, "this example ran longer than the window margin"
        reader = self.timeline.reader
        member = self.people[person].member
        expected = await self.sql.whole_feed(member, per_page=per_page)
        served, declined = reader.served, reader.declined
        actual = await self.cached.whole_feed(member, per_page=per_page)
        from_redis = reader.declined == declined and reader.served - served == pages(len(actual), per_page)
        return expected, actual, from_redis

    async def check_reader(
        self,
        person: int,
        *,
        settled: bool,
        per_page: int,
        author: int | None = None,
        gone: str | None = None,
    ) -> None:
        """Read-your-writes, without draining the outbox."""
        warm = await self.is_warm(self.people[person])
        expected, actual, from_redis = await self.both_feeds(person, per_page)
        where = f"user {person}'s feed, per_page={per_page}"
        if warm:
            assert from_redis, f"{where}: a warm timeline declined, the page came from SQL"
            event("read-your-writes served from Redis")
        if settled:
            assert actual == expected, f"{where} (outbox drained first): {self.differences(actual, expected)}"
        else:
            assert is_subsequence(actual, expected), (
                f"{where}: Redis shows what SQL does not, or out of order"
            )
            if author is not None:
                target = self.people[author].member
                assert by_author(actual, target) == by_author(expected, target), f"{where}: user {author}"
        if gone is not None:
            assert gone not in [item["id"] for item in actual], f"{where}: deleted record {gone} still shown"
        await self.timeline.reader.drain_background()

    async def read(self, op: Read) -> None:
        person = self.who(op.actor)
        expected, actual, _ = await self.both_feeds(person, op.per_page)
        assert is_subsequence(actual, expected), f"user {person}'s feed: Redis shows what SQL does not"
        await self.timeline.reader.drain_background()

    async def checkpoint(self) -> None:
        await self.drain()
        async with self.engine.connect() as connection:
            left = await connection.scalar(sa.text("SELECT COUNT(*) FROM outbox"))
        assert left == 0, f"{left} outbox events left after draining (a handler failed)"
        await self.timeline.reader.drain_background()
        for _ in range(2):  # the first read rebuilds a cold timeline, the next one the celebrity set
            for someone in self.present():
                expect(await self.cached.feed(self.people[someone].member), 200)
            await self.timeline.reader.drain_background()
        for person in self.present():
            for per_page in CHECK_PAGE_SIZES:
                expected, actual, from_redis = await self.both_feeds(person, per_page)
                assert actual == expected, (
                    f"user {person}'s feed, per_page={per_page}, after draining: "
                    f"{self.differences(actual, expected)}"
                )
                assert from_redis, f"user {person}'s feed, per_page={per_page}: the page came from SQL"
        celebrities = await self.timeline.store.celebrities.members() or set()
        if any(someone.uuid in celebrities for someone in self.people):
            event("checkpoint with a celebrity in the set")


# Found by this test, shrunk by hand (threshold 3). Users 0, 2, 3, 4 follow user 1 and read once: their
# timelines are built, but nobody has read a warm timeline yet, so the celebrity set has never been built
# (no ``gn:{celebs}:ready``). User 1 clocks out with 4 followers: the worker puts them in the celebrity set
# and fans nothing out. User 0 unfollows (3 followers left, not more than the threshold) and reads: the
# reader finds the set not ready and rebuilds it, forgetting user 1, whose record is now neither in any
# timeline nor merged at read time. Users 2, 3, 4 are served from Redis without it.
CELEBRITY_SET_REBUILD_DROPS_A_CELEBRITY = Program(
    users=6,
    ops=(
        Crowd(target=1, count=4, offset=0, settle=True),
        Drain(),
        Sleep(actor=1, ago=3 * HOUR, duration=HOUR),
        Drain(),
        Desert(target=1, keep=3, settle=False),
    ),
)
# The former-celebrity backfill path, deterministically: user 1 becomes a celebrity (after the set is built),
# clocks out unfanned, drops to two followers, clocks out again (backfill), is followed again.
CELEBRITY_COMES_AND_GOES = Program(
    users=7,
    ops=(
        Sleep(actor=1, ago=WINDOW + HOUR, duration=8 * HOUR),
        Crowd(target=1, count=5, offset=0, settle=True),
        Read(actor=0, per_page=2),
        Drain(),
        Sleep(actor=1, ago=2 * DAY, duration=8 * HOUR),
        Checkpoint(),
        Desert(target=1, keep=2, settle=False),
        Sleep(actor=1, ago=3 * HOUR, duration=HOUR),
        Checkpoint(),
        Follow(actor=0, target=1, settle=False, per_page=1),
        Checkpoint(),
    ),
)

# A celebrity leaves: records never fanned out, merged at read time from every process's snapshot, must
# leave every fan's next page (tombstones), and the set (the snapshots reload).
CELEBRITY_LEAVES = Program(
    users=7,
    ops=(
        Sleep(actor=1, ago=2 * DAY, duration=8 * HOUR),
        Crowd(target=1, count=5, offset=0, settle=True),
        Read(actor=0, per_page=2),
        Drain(),
        Sleep(actor=1, ago=DAY, duration=7 * HOUR, logged=True),
        Checkpoint(),
        Rename(actor=1, name="Ada", settle=False, per_page=1),
        DeleteAccount(actor=1, settle=False, per_page=1),
        Checkpoint(),
    ),
)


@pytest.mark.timeout(900)  # room for Hypothesis to shrink a failure (it gives up after 5 minutes)
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=programs)
@example(program=CELEBRITY_COMES_AND_GOES)
@example(program=CELEBRITY_LEAVES)
@example(program=CELEBRITY_SET_REBUILD_DROPS_A_CELEBRITY)
async def test_timeline_matches_sql_feed(
    api: Api, timeline_api: Api, timeline: AppTimeline, timeline_app: FastAPI, program: Program
) -> None:
    # Many examples run inside one test: each starts from empty tables, an empty Redis and its own "now".
    engine = timeline_app.state.services.database.engine
    await timeline.reader.drain_background()
    await truncate(engine)
    await timeline.redis.flushall()
    timeline.reader.gate.breaker = Breaker()
    runner = Runner(api, timeline_api, timeline, engine, now_ms())
    for _ in range(program.users):
        runner.people.append(Person(await timeline_api.register()))
    for op in program.ops:
        await runner.run(op)
    await runner.checkpoint()
