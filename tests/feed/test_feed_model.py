"""The followings feed against an in-memory reference model, driven by random programs of API calls.

Hypothesis writes programs of register / follow / unfollow / clock-in / clock-out (back-dated, sometimes
invalid on purpose) / log a forgotten night (often before the user's earlier records, sometimes overlapping
one or invalid) / delete calls, renames and account deletions (now and then with a wrong password; a
newcomer may take a deleted user's name), interleaved with feed reads. The model predicts the status and
error code of every call, so model and API stay in lockstep, and every page of every user's feed (cursor
paging at several page sizes, ``start_index`` paging with the original app's offsets, and scrolls that carry
on while the data changes under them) must equal what the model says the feed is:

    completed records of the users the caller currently follows, clocked in at or after now - 7 days,
    ordered by duration (whole seconds, floored) descending, then id descending.

After every successful follow, unfollow, delete, rename and account deletion, the feeds it changes are read
at once and must already show it (after an account deletion, so must the counters of the people around it).
Times are whole milliseconds (epoch ms ints in the model), relative to a "now" taken when each example
starts. No clock-in is generated within ``MARGIN`` of the 7-day (or the 30-day) boundary, so the time an
example takes to run can never move a record across the window.

``pytest tests/feed/test_feed_model.py --hypothesis-show-statistics`` shows how often each answer of the API
and each interesting feed shape (equal durations, a scroll carried on later) was exercised.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

from goodnight.deps import Services
from tests.support.api import PASSWORD, Api, Member
from tests.support.databases import truncate
from tests.support.millis import DAY, HOUR, MARGIN, MINUTE, SECOND, WINDOW, iso, now_ms, parse_iso

MAX_BACKDATE = 30 * DAY
# The API accepts times up to 60 s ahead of its clock; "future" times are generated at least this far ahead,
# and the model calls a time "in the future" when it is more than half this ahead of the example's "now".
FUTURE = 5 * MINUTE
# "Fresh" clock-ins (usually valid ones) are generated between this long ago and an hour ago. A clock-out that
# would run past "now" happens halfway between the clock-in and now instead, leaving room for the next record.
OLDEST_FRESH_CLOCK_IN = 9 * DAY
DEFAULT_PER_PAGE = 10
HISTORY_PREVIEW = 20
MAX_USERS = 5
GHOST = -1  # an op target that is no user (or no record) at all: a deleted user's id, if there is one
MAX_EXAMPLES = 25  # per backend: some 25-40 s for the three on a quiet machine


def humanized(seconds: int) -> str:
    """Rails' ``Duration#inspect``: the non-zero parts, joined by ``to_sentence``."""
    weeks, rest = divmod(seconds, 7 * 86400)
    days, rest = divmod(rest, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, rest = divmod(rest, 60)
    named = ((weeks, "week"), (days, "day"), (hours, "hour"), (minutes, "minute"), (rest, "second"))
    parts = [f"{count} {unit}" + ("" if count == 1 else "s") for count, unit in named if count]
    if len(parts) < 3:
        return " and ".join(parts) or "0 seconds"
    return ", ".join(parts[:-1]) + ", and " + parts[-1]


# --- Programs -----------------------------------------------------------------------------------------------
# User references are indexes, resolved modulo the number of users registered so far.


@dataclass(frozen=True)
class Register:
    name: str | None
    reuse: bool = False  # take the username of a deleted user, if there is one


@dataclass(frozen=True)
class Rename:
    actor: int
    name: str | None


@dataclass(frozen=True)
class DeleteAccount:
    actor: int
    wrong_password: bool = False


@dataclass(frozen=True)
class Follow:
    actor: int
    target: int  # GHOST: an id that belongs to nobody; == actor: oneself; otherwise never oneself
    anyone: bool = True  # False: ``target`` picks among the users with records in the week not yet followed


@dataclass(frozen=True)
class Unfollow:
    actor: int
    target: int  # GHOST: an id that belongs to nobody; == actor: oneself; otherwise never oneself
    anyone: bool = False  # False: ``target`` picks among the users the actor follows, if any


ClockInKind = Literal["fresh", "raw", "inside", "now", "future", "too_old"]


@dataclass(frozen=True)
class ClockIn:
    """``fresh``: ``value`` ms ago (1 h to 9 days), or when the actor's last record ends if that is later
    (usually valid); ``raw``: ``value`` ms ago (often overlapping); ``inside``: ``value`` per mille of the way
    through the actor's last record (overlapping it); ``now``: no body; ``future``: ``value`` ms after now +
    5 min; ``too_old``: ``value`` ms more than 30 days ago."""

    actor: int
    kind: ClockInKind
    value: int = 0


ClockOutKind = Literal["after", "now", "not_after", "future"]


@dataclass(frozen=True)
class ClockOut:
    """``after``: ``value`` ms after the clock-in (if that is past now: halfway to now); ``now``: no body;
    ``not_after``: ``value`` ms before (or at) the clock-in; ``future``: ``value`` ms after now + 5 min."""

    actor: int
    kind: ClockOutKind
    value: int = 0
    anyone: bool = True  # False: ``actor`` picks among the users who are clocked in, if any


@dataclass(frozen=True)
class Sleep:
    """A night: a clock-in then a clock-out by the same user, the way most records are made."""

    clock_in: ClockIn
    clock_out: ClockOut


LogNightKind = Literal["earlier", "raw", "future", "too_old", "backwards"]


@dataclass(frozen=True)
class LogNight:
    """A forgotten night, logged whole. ``earlier``: ends ``value`` ms before the actor's earliest record
    starts, or ``value`` ms before now without one (usually valid); ``raw``: starts ``value`` ms ago (often
    overlapping; if it would end after now, it ends halfway to now); ``future``: ends ``value`` ms after
    now + 5 min; ``too_old``: starts ``value`` ms more than 30 days ago; ``backwards``: starts ``value`` ms
    ago and ends ``duration`` ms before (or at) that."""

    actor: int
    kind: LogNightKind
    value: int
    duration: int


@dataclass(frozen=True)
class Delete:
    actor: int
    owner: int  # whose record (usually the actor's own); GHOST: an id no record has
    index: int  # which of the owner's records, ever created, deleted ones included


@dataclass(frozen=True)
class CheckFeeds:
    per_page: int | None  # None: the default page size


@dataclass(frozen=True)
class Scroll:
    """Read the next page of a scroll, whatever happened since its previous page. ``resume``: carry on the
    oldest ongoing scroll, if there is one; otherwise the actor (preferably picked among the users whose feed
    is longer than a page) carries on theirs or starts one."""

    actor: int
    per_page: int
    resume: bool = False


Op = (
    Register
    | Follow
    | Unfollow
    | ClockIn
    | ClockOut
    | Sleep
    | LogNight
    | Delete
    | Rename
    | DeleteAccount
    | CheckFeeds
    | Scroll
)


@dataclass(frozen=True)
class Program:
    names: tuple[str | None, ...]  # the users registered up front
    ops: tuple[Op, ...]


users = st.integers(0, MAX_USERS - 1)
names = st.one_of(st.none(), st.sampled_from(["Ada", "Grace Hopper", "Zoë Ø"]))
page_sizes = st.sampled_from([1, 2, 3, 5, 100])
# Exact hours and sub-second remainders, so durations tie (ordered by id) and flooring shows.
durations = st.one_of(
    st.sampled_from([HOUR, HOUR + 999, 7 * HOUR + 30 * MINUTE]),
    st.sampled_from([1, 999, SECOND, SECOND + 999, MINUTE, HOUR + 1, 8 * HOUR]),
    st.integers(1, 14 * HOUR),
)
# Fresh clock-ins: 1 h to 9 days ago, now and then just inside or outside the week (never within MARGIN).
fresh_clock_ins = st.one_of(
    st.integers(HOUR, OLDEST_FRESH_CLOCK_IN),
    st.sampled_from([WINDOW - 3 * MINUTE, WINDOW + 3 * MINUTE, WINDOW - HOUR, WINDOW + HOUR]),
)
# "pause" comes first so that it is what the shrinker turns every op a failure does not need into; pauses are
# dropped from the program, so a shrunk counterexample lists only the ops that matter.
OP_KINDS = (
    "pause",
    *["sleep"] * 8,
    *["log_night"] * 3,
    *["clock_in"] * 3,
    *["clock_out"] * 3,
    *["follow"] * 6,
    *["unfollow"] * 3,
    *["delete"] * 2,
    *["scroll"] * 5,
    *["check"] * 1,
    *["register"] * 2,
    *["rename"] * 1,
    *["delete_account"] * 2,
)


@st.composite
def targets(draw: st.DrawFn, actor: int) -> int:
    """Mostly someone else; now and then the actor themself, or nobody at all."""
    choice = draw(st.integers(0, 19))
    if choice == 19:
        return GHOST
    if choice == 18:
        return actor
    return actor + 1 + draw(st.integers(0, MAX_USERS - 2))


@st.composite
def clock_ins(draw: st.DrawFn) -> ClockIn:
    actor = draw(users)
    kind = draw(st.sampled_from(["fresh"] * 10 + ["raw", "inside", "future", "too_old"] * 2 + ["now"]))
    if kind == "fresh":
        return ClockIn(actor, "fresh", draw(fresh_clock_ins))
    if kind == "raw":
        return ClockIn(actor, "raw", draw(st.integers(0, MAX_BACKDATE - MARGIN - 1)))
    if kind == "inside":
        return ClockIn(actor, "inside", draw(st.integers(0, 999)))
    if kind == "future":
        return ClockIn(actor, "future", draw(st.integers(0, 2 * DAY)))
    if kind == "too_old":
        return ClockIn(actor, "too_old", draw(st.integers(MARGIN, 15 * DAY)))
    return ClockIn(actor, "now")


@st.composite
def clock_outs(draw: st.DrawFn) -> ClockOut:
    actor = draw(users)
    kind = draw(st.sampled_from(["after"] * 8 + ["not_after"] * 3 + ["now", "future"]))
    anyone = draw(st.integers(0, 3)) == 3
    if kind == "after":
        return ClockOut(actor, "after", draw(durations), anyone)
    if kind == "not_after":
        return ClockOut(actor, "not_after", draw(st.sampled_from([0, 1, SECOND, HOUR, 0])), anyone)
    if kind == "future":
        return ClockOut(actor, "future", draw(st.integers(0, DAY)), anyone)
    return ClockOut(actor, "now", anyone=anyone)


@st.composite
def nights(draw: st.DrawFn) -> LogNight:
    actor = draw(users)
    kind = draw(st.sampled_from(["earlier"] * 5 + ["raw"] * 3 + ["future", "too_old", "backwards"]))
    if kind == "earlier":
        gap = draw(st.one_of(st.sampled_from([0, 1, SECOND, HOUR]), st.integers(0, 2 * DAY)))
        return LogNight(actor, "earlier", gap, draw(durations))
    if kind == "raw":
        return LogNight(actor, "raw", draw(st.integers(0, MAX_BACKDATE - MARGIN - 1)), draw(durations))
    if kind == "future":
        return LogNight(actor, "future", draw(st.integers(0, DAY)), draw(durations))
    if kind == "too_old":
        return LogNight(actor, "too_old", draw(st.integers(MARGIN, 15 * DAY)), draw(durations))
    return LogNight(actor, "backwards", draw(fresh_clock_ins), draw(st.sampled_from([0, 1, SECOND, HOUR])))


@st.composite
def operations(draw: st.DrawFn) -> Op | None:
    kind = draw(st.sampled_from(OP_KINDS))
    if kind == "pause":
        return None
    if kind == "clock_in":
        return draw(clock_ins())
    if kind == "clock_out":
        return draw(clock_outs())
    if kind == "log_night":
        return draw(nights())
    if kind == "sleep":
        actor = draw(users)
        return Sleep(
            ClockIn(actor, "fresh", draw(fresh_clock_ins)), ClockOut(actor, "after", draw(durations))
        )
    if kind == "follow":
        actor = draw(users)
        return Follow(actor, draw(targets(actor)), draw(st.booleans()))
    if kind == "unfollow":
        actor = draw(users)
        return Unfollow(actor, draw(targets(actor)), draw(st.integers(0, 3)) == 3)
    if kind == "delete":
        actor = draw(users)
        choice = draw(st.integers(0, 9))
        owner = actor if choice < 8 else GHOST if choice == 9 else draw(users)
        return Delete(actor, owner, draw(st.integers(0, 5)))
    if kind == "scroll":
        return Scroll(draw(users), draw(st.sampled_from([1, 2])), draw(st.booleans()))
    if kind == "check":
        return CheckFeeds(draw(page_sizes))
    if kind == "rename":
        return Rename(draw(users), draw(names))
    if kind == "delete_account":
        return DeleteAccount(draw(users), draw(st.integers(0, 4)) == 0)
    return Register(draw(names), draw(st.booleans()))


programs = st.builds(
    Program,
    names=st.lists(names, min_size=2, max_size=4).map(tuple),
    ops=st.lists(operations(), min_size=25, max_size=45).map(lambda ops: tuple(op for op in ops if op)),
)


# --- The reference model, and the runner that keeps it in lockstep with the API -----------------------------


@dataclass
class Person:
    member: Member
    name: str | None
    deleted: bool = False


@dataclass
class Record:
    id: uuid.UUID
    owner: int
    clocked_in: int
    clocked_out: int | None = None
    deleted: bool = False

    @property
    def duration(self) -> int:
        assert self.clocked_out is not None
        return (self.clocked_out - self.clocked_in) // SECOND

    @property
    def feed_key(self) -> tuple[int, uuid.UUID]:
        # uuid.UUID orders by its 128-bit value: bytewise, like the canonical lowercase hex strings.
        return (self.duration, self.id)


def expect(response: httpx.Response, status: int, code: str | None = None) -> Any:
    """Assert the status (and error code); return the JSON body, if any."""
    request = response.request
    assert response.status_code == status, (
        f"{request.method} {request.url}: the model expects {status} {code or ''}, "
        f"the API answered {response.status_code} {response.text}"
    )
    if code is not None:
        assert response.json()["error"]["code"] == code, f"{request.method} {request.url}: {response.text}"
    if request.method != "GET":  # how often each outcome is exercised: pytest --hypothesis-show-statistics
        parts = request.url.path.split("/")
        route = "delete" if request.method == "DELETE" else parts[-2] if "socials" in parts else parts[-1]
        if request.url.path.endswith("/users/me"):
            route = "delete account" if request.method == "DELETE" else "rename"
        event(f"{route} -> {status} {code or ''}".rstrip())
    return response.json() if response.content else None


class Runner:
    def __init__(self, api: Api, now: int) -> None:
        self.api = api
        self.http = api.client
        self.now = now
        self.people: list[Person] = []
        self.follows: set[tuple[int, int]] = set()  # (follower, followed), active follows only
        self.records: list[Record] = []  # every record ever created, in creation order
        self.scrolls: dict[int, tuple[str, tuple[int, uuid.UUID]]] = {}  # actor: (next_cursor, last key)
        self.freed: list[str] = []  # usernames of deleted accounts, free to register again

    # -- model queries --

    def present(self) -> list[int]:
        """Everyone whose account has not been deleted."""
        return [p for p, person in enumerate(self.people) if not person.deleted]

    def who(self, index: int) -> int:
        present = self.present()
        return present[index % len(present)]

    def other_than(self, person: int) -> int:
        """The next one present after ``person`` (``person`` themself when alone)."""
        present = self.present()
        return present[(present.index(person) + 1) % len(present)]

    def headers(self, person: int) -> dict[str, str]:
        return self.people[person].member.headers

    def live(self, person: int) -> list[Record]:
        return [r for r in self.records if r.owner == person and not r.deleted]

    def open_record(self, person: int) -> Record | None:
        found = [r for r in self.live(person) if r.clocked_out is None]
        assert len(found) <= 1
        return found[0] if found else None

    def last_end(self, person: int) -> int | None:
        ends = [r.clocked_out for r in self.live(person) if r.clocked_out is not None]
        return max(ends, default=None)

    def feed(self, person: int) -> list[Record]:
        since = self.now - WINDOW
        chosen = [
            r
            for r in self.records
            if not r.deleted
            and r.clocked_out is not None
            and (person, r.owner) in self.follows
            and r.clocked_in >= since
        ]
        return sorted(chosen, key=lambda r: r.feed_key, reverse=True)

    def item(self, record: Record) -> dict[str, Any]:
        assert record.clocked_out is not None
        owner = self.people[record.owner]
        return {
            "id": str(record.id),
            "clocked_in_at": iso(record.clocked_in),
            "clocked_out_at": iso(record.clocked_out),
            "duration": record.duration,
            "humanized_duration": humanized(record.duration),
            "user": {"id": owner.member.id, "username": owner.member.username, "name": owner.name},
        }

    def avoid_boundaries(self, at: int) -> int:
        """Move a clock-in that is too close to the 7-day or 30-day boundary a little later."""
        for boundary in (self.now - WINDOW, self.now - MAX_BACKDATE):
            if abs(at - boundary) <= MARGIN:
                at = boundary + MARGIN + 1
        return at

    # -- operations --

    async def run(self, op: Op) -> None:
        note(f"op: {op}")
        assert now_ms() - self.now < MARGIN, "this example ran longer than the margin around the window"
        if isinstance(op, Register):
            await self.register(op.name, reuse=op.reuse)
        elif isinstance(op, Follow):
            await self.follow(op)
        elif isinstance(op, Unfollow):
            await self.unfollow(op)
        elif isinstance(op, ClockIn):
            await self.clock_in(op)
        elif isinstance(op, ClockOut):
            await self.clock_out(op)
        elif isinstance(op, Sleep):
            await self.clock_in(op.clock_in)
            await self.clock_out(op.clock_out)
        elif isinstance(op, LogNight):
            await self.log_night(op)
        elif isinstance(op, Delete):
            await self.delete(op)
        elif isinstance(op, Scroll):
            await self.scroll(op)
        elif isinstance(op, Rename):
            await self.rename(op)
        elif isinstance(op, DeleteAccount):
            await self.delete_account(op)
        else:
            for person in self.present():
                await self.walk_feed(person, op.per_page)

    async def register(self, name: str | None, *, reuse: bool = False) -> None:
        if len(self.present()) >= MAX_USERS:
            return
        username = self.freed.pop(0) if reuse and self.freed else None
        if username is not None:
            event("a newcomer takes a deleted user's name")
        self.people.append(Person(await self.api.register(username, name=name), name))

    def target(self, index: int) -> tuple[str, int | None]:
        if index == GHOST:
            gone = [person.member.id for person in self.people if person.deleted]
            return (gone[0] if gone else str(uuid.uuid4())), None
        person = self.who(index)
        return self.people[person].member.id, person

    async def follow(self, op: Follow) -> None:
        actor = self.who(op.actor)
        target_index = op.target
        since = self.now - WINDOW
        worth_it = sorted(
            {r.owner for r in self.records if not r.deleted and r.clocked_in >= since}
            - {actor}
            - {whom for who, whom in self.follows if who == actor}
        )
        if target_index not in (GHOST, op.actor) and worth_it and not op.anyone:
            target_index = self.present().index(worth_it[target_index % len(worth_it)])
        elif target_index not in (GHOST, op.actor) and self.who(target_index) == actor:
            # Someone else was meant: only ``target == actor`` means oneself.
            target_index = self.present().index(self.other_than(actor))
        target_id, target = self.target(target_index)
        response = await self.http.post(f"/socials/follow/{target_id}", headers=self.headers(actor))
        if target is None:
            expect(response, 404, "not_found")
        elif target == actor:
            expect(response, 400, "cannot_follow_self")
        elif (actor, target) in self.follows:
            expect(response, 422, "already_following")
        else:
            expect(response, 201)
            self.follows.add((actor, target))
            await self.walk_feed(actor, 100)  # visible on the very next read

    async def unfollow(self, op: Unfollow) -> None:
        actor = self.who(op.actor)
        target_index = op.target
        followed = sorted(whom for who, whom in self.follows if who == actor)
        if target_index not in (GHOST, op.actor) and followed and not op.anyone:
            target_index = self.present().index(followed[target_index % len(followed)])
        elif target_index not in (GHOST, op.actor) and self.who(target_index) == actor:
            # Someone else was meant: only ``target == actor`` means oneself.
            target_index = self.present().index(self.other_than(actor))
        target_id, target = self.target(target_index)
        response = await self.http.post(f"/socials/unfollow/{target_id}", headers=self.headers(actor))
        if target is None:
            expect(response, 404, "not_found")
        elif (actor, target) not in self.follows:  # oneself included: the contract has no 400 for unfollow
            expect(response, 422, "not_following")
        else:
            expect(response, 200)
            self.follows.discard((actor, target))
            await self.walk_feed(actor, 100)

    def clock_in_time(self, actor: int, op: ClockIn) -> int | None:
        if op.kind == "now":
            return None
        if op.kind == "future":
            return self.now + FUTURE + op.value
        if op.kind == "too_old":
            return self.now - MAX_BACKDATE - op.value
        if op.kind == "raw":
            return self.avoid_boundaries(self.now - op.value)
        if op.kind == "inside":
            closed = [r for r in self.live(actor) if r.clocked_out is not None]
            if not closed:
                return self.now - HOUR
            last = max(closed, key=lambda r: r.clocked_in)
            assert last.clocked_out is not None
            return self.avoid_boundaries(
                last.clocked_in + (last.clocked_out - last.clocked_in) * op.value // 1000
            )
        # Right after the actor's last record when the time asked for would overlap it: touching is allowed.
        return self.avoid_boundaries(max(self.now - op.value, self.last_end(actor) or 0))

    async def clock_in(self, op: ClockIn) -> None:
        actor = self.who(op.actor)
        at = self.clock_in_time(actor, op)
        body = None if at is None else {"clocked_in_at": iso(at)}
        note(f"  clock in {actor} at {iso(at) if at is not None else 'now'}")
        response = await self.http.post("/sleep_records/clock_in", json=body, headers=self.headers(actor))
        last_end = self.last_end(actor)
        if at is not None and not self.now - MAX_BACKDATE <= at <= self.now + FUTURE // 2:
            expect(response, 422, "validation_error")
            return
        if self.open_record(actor) is not None:
            expect(response, 400, "already_clocked_in")
            return
        if at is not None and last_end is not None and at < last_end:
            expect(response, 422, "validation_error")  # overlaps one of the actor's records
            return
        data = expect(response, 201)
        shown = data["sleep_record"]
        if at is None:
            at = parse_iso(shown["clocked_in_at"])
            assert last_end is None or at >= last_end
        record = Record(uuid.UUID(data["sleep_record_id"]), actor, at)
        self.records.append(record)
        assert shown["id"] == data["sleep_record_id"]
        assert {k: v for k, v in shown.items() if k != "created_at"} == {
            "id": str(record.id),
            "user_id": self.people[actor].member.id,
            "state": "clocked_in",
            "clocked_in_at": iso(at),
            "clocked_out_at": None,
            "duration": None,
        }
        history = sorted(self.live(actor), key=lambda r: (r.clocked_in, r.id), reverse=True)
        assert [item["id"] for item in data["sleep_records"]] == [
            str(r.id) for r in history[:HISTORY_PREVIEW]
        ]

    async def clock_out(self, op: ClockOut) -> None:
        sleeping = [p for p in self.present() if self.open_record(p) is not None]
        actor = sleeping[op.actor % len(sleeping)] if sleeping and not op.anyone else self.who(op.actor)
        opened = self.open_record(actor)
        at: int | None
        if op.kind == "future":
            at = self.now + FUTURE + op.value
        elif op.kind == "now":
            at = None
        elif opened is None:
            at = self.now - HOUR  # any time: there is nothing to clock out of
        elif op.kind == "after":
            at = opened.clocked_in + op.value
            if at > self.now:
                at = opened.clocked_in + (self.now - opened.clocked_in) // 2
        else:
            at = opened.clocked_in - op.value
        body = None if at is None else {"clocked_out_at": iso(at)}
        note(f"  clock out {actor} at {iso(at) if at is not None else 'now'}")
        response = await self.http.post("/sleep_records/clock_out", json=body, headers=self.headers(actor))
        if at is not None and at > self.now + FUTURE // 2:
            expect(response, 422, "validation_error")
            return
        if opened is None:
            expect(response, 400, "not_clocked_in")
            return
        if at is not None and at <= opened.clocked_in:
            expect(response, 422, "validation_error")
            return
        data = expect(response, 200)
        shown = data["sleep_record"]
        if at is None:
            at = parse_iso(shown["clocked_out_at"])
        opened.clocked_out = at
        assert data["duration"] == opened.duration == (at - opened.clocked_in) // SECOND
        assert {k: v for k, v in shown.items() if k != "created_at"} == {
            "id": str(opened.id),
            "user_id": self.people[actor].member.id,
            "state": "clocked_out",
            "clocked_in_at": iso(opened.clocked_in),
            "clocked_out_at": iso(at),
            "duration": opened.duration,
        }

    def night_times(self, actor: int, op: LogNight) -> tuple[int, int]:
        if op.kind == "future":
            end = self.now + FUTURE + op.value
            return end - op.duration, end
        if op.kind == "too_old":
            start = self.now - MAX_BACKDATE - op.value
            return start, start + op.duration
        if op.kind == "backwards":
            start = self.avoid_boundaries(self.now - op.value)
            return start, start - op.duration
        if op.kind == "raw":
            start = self.avoid_boundaries(self.now - op.value)
            end = start + op.duration
            return start, end if end <= self.now else start + (self.now - start) // 2
        anchor = min((r.clocked_in for r in self.live(actor)), default=self.now)
        start = self.avoid_boundaries(anchor - op.value - op.duration)
        return start, start + op.duration

    def overlaps(self, actor: int, start: int, end: int) -> bool:
        """An open record runs on until it is clocked out: it overlaps everything after its clock-in."""
        return any(
            r.clocked_in < end and (r.clocked_out is None or r.clocked_out > start) for r in self.live(actor)
        )

    async def log_night(self, op: LogNight) -> None:
        actor = self.who(op.actor)
        start, end = self.night_times(actor, op)
        note(f"  log a night for {actor}: {iso(start)} to {iso(end)}")
        body = {"clocked_in_at": iso(start), "clocked_out_at": iso(end)}
        response = await self.http.post("/sleep_records", json=body, headers=self.headers(actor))
        latest_allowed = self.now + FUTURE // 2
        if not self.now - MAX_BACKDATE <= start <= latest_allowed or end > latest_allowed or end <= start:
            expect(response, 422, "validation_error")
            return
        if self.overlaps(actor, start, end):
            expect(response, 422, "validation_error")
            event("a logged night overlaps a record")
            return
        data = expect(response, 201)
        record = Record(uuid.UUID(data["id"]), actor, start, end)
        self.records.append(record)
        assert {k: v for k, v in data.items() if k != "created_at"} == {
            "id": str(record.id),
            "user_id": self.people[actor].member.id,
            "state": "clocked_out",
            "clocked_in_at": iso(start),
            "clocked_out_at": iso(end),
            "duration": record.duration,
        }
        if any(r.clocked_in > start for r in self.live(actor)):
            event("a night is logged before a later record")

    async def delete(self, op: Delete) -> None:
        actor = self.who(op.actor)
        theirs = [] if op.owner == GHOST else [r for r in self.records if r.owner == self.who(op.owner)]
        record = theirs[op.index % len(theirs)] if theirs else None
        record_id = str(record.id) if record else str(uuid.uuid4())
        note(f"  delete {record_id} ({record}) as {actor}")
        response = await self.http.delete(f"/sleep_records/{record_id}", headers=self.headers(actor))
        if record is None or record.owner != actor or record.deleted:
            expect(response, 404, "not_found")
            return
        expect(response, 204)
        record.deleted = True
        for follower, followed in sorted(self.follows):  # gone from every feed on the very next read
            if followed == actor:
                await self.walk_feed(follower, 100)

    async def rename(self, op: Rename) -> None:
        actor = self.who(op.actor)
        note(f"  rename {actor} to {op.name!r}")
        data = expect(await self.api.rename(self.people[actor].member, op.name), 200)
        assert (data["id"], data["name"]) == (self.people[actor].member.id, op.name)
        self.people[actor].name = op.name
        for follower, followed in sorted(self.follows):  # the new name on the very next read
            if followed == actor:
                await self.walk_feed(follower, 100)

    async def delete_account(self, op: DeleteAccount) -> None:
        actor = self.who(op.actor)
        if len(self.present()) == 1 and not op.wrong_password:
            return  # keep someone to act
        person = self.people[actor]
        note(f"  delete the account of {actor}{' (wrong password)' if op.wrong_password else ''}")
        password = "not the password" if op.wrong_password else PASSWORD
        response = await self.api.delete_account(person.member, password)
        if op.wrong_password:
            expect(response, 401, "invalid_credentials")
            return
        expect(response, 204)
        around = sorted({p for pair in self.follows if actor in pair for p in pair} - {actor})
        followers = sorted(who for who, whom in self.follows if whom == actor)
        self.follows = {pair for pair in self.follows if actor not in pair}
        for record in self.live(actor):
            record.deleted = True
        person.deleted = True
        self.freed.append(person.member.username)
        self.scrolls.pop(actor, None)
        expect(await self.http.get("/users/me", headers=person.member.headers), 401, "unauthorized")
        for follower in followers:  # the records gone from every follower's very next read
            await self.walk_feed(follower, 100)
        for other in around:
            await self.check_counters(other)

    async def check_counters(self, person: int) -> None:
        member = self.people[person].member
        data = expect(await self.http.get(f"/users/{member.id}", headers=member.headers), 200)
        followers = sum(1 for _, whom in self.follows if whom == person)
        followings = sum(1 for who, _ in self.follows if who == person)
        assert (data["followers_count"], data["followings_count"]) == (followers, followings), person

    # -- feed reads --

    async def read_feed(self, person: int, **params: Any) -> dict[str, Any]:
        assert now_ms() - self.now < MARGIN, "this example ran longer than the window margin"
        page: dict[str, Any] = expect(await self.api.feed(self.people[person].member, **params), 200)
        return page

    def assert_page(
        self, page: dict[str, Any], remaining: list[Record], per_page: int, where: str, *, first: bool
    ) -> None:
        """The first ``per_page`` of the records still to come, and a cursor iff more. A ``first`` page (asked
        without a cursor) is the original app's offset page from 0 as well; a page read by cursor has no
        offsets."""
        expected = [self.item(r) for r in remaining[:per_page]]
        assert page["data"] == expected, where
        pagination = page["pagination"]
        assert pagination["per_page"] == per_page, where
        assert (pagination["next_cursor"] is not None) == (len(remaining) > per_page), (where, pagination)
        if first:
            assert pagination["start_index"] == 0, where
            assert pagination["last_index"] == max(len(expected) - 1, 0), where
        else:
            assert "start_index" not in pagination, where
            assert "last_index" not in pagination, where

    async def walk_feed(self, person: int, per_page: int | None) -> None:
        """Every page of the feed, following next_cursor, each compared with the model."""
        expected = self.feed(person)
        params: dict[str, Any] = {} if per_page is None else {"per_page": per_page}
        seen = 0
        while True:
            page = await self.read_feed(person, **params)
            where = f"feed of user {person}, per_page={per_page}, from item {seen}"
            self.assert_page(page, expected[seen:], per_page or DEFAULT_PER_PAGE, where, first=seen == 0)
            seen += len(page["data"])
            cursor = page["pagination"]["next_cursor"]
            if cursor is None:
                break
            params["cursor"] = cursor
        assert seen == len(expected)

    async def scroll(self, op: Scroll) -> None:
        """Records changed since the previous page show up, or not, by where they sort against the cursor."""
        if op.resume and self.scrolls:
            actor = next(iter(self.scrolls))
        else:  # preferably someone whose feed is more than one page long
            everyone = self.present()
            candidates = [p for p in everyone if len(self.feed(p)) > op.per_page] or list(everyone)
            actor = candidates[op.actor % len(candidates)]
        remaining = self.feed(actor)
        params: dict[str, Any] = {"per_page": op.per_page}
        ongoing = self.scrolls.pop(actor, None)
        if ongoing is not None:
            event("a scroll reads its next page, ops later")
            cursor, last_key = ongoing
            params["cursor"] = cursor
            remaining = [r for r in remaining if r.feed_key < last_key]
        page = await self.read_feed(actor, **params)
        where = f"scroll of user {actor}, per_page={op.per_page}, {'next' if ongoing else 'first'} page"
        self.assert_page(page, remaining, op.per_page, where, first=ongoing is None)
        if page["pagination"]["next_cursor"] is not None:
            self.scrolls[actor] = (page["pagination"]["next_cursor"], remaining[op.per_page - 1].feed_key)

    async def check_offsets(self, person: int) -> None:
        """``start_index`` paging, and a cursor taken from such a page carrying on from it."""
        expected = self.feed(person)
        size = len(expected)
        for start, per_page in sorted({(0, 2), (1, 2), (max(size - 1, 0), 10), (size, 3), (size + 2, 10)}):
            page = await self.read_feed(person, start_index=start, per_page=per_page)
            where = f"feed of user {person}, start_index={start}, per_page={per_page}"
            window = expected[start : start + per_page]
            assert page["data"] == [self.item(r) for r in window], where
            pagination = page["pagination"]
            assert pagination["per_page"] == per_page, where
            assert pagination["start_index"] == start, where
            # The original app's rule: an empty page's last_index is its start_index.
            assert pagination["last_index"] == start + max(len(window) - 1, 0), where
            cursor = pagination["next_cursor"]
            assert (cursor is not None) == (start + per_page < size), (where, pagination)
            if cursor is not None:
                after = await self.read_feed(person, cursor=cursor, per_page=per_page)
                self.assert_page(
                    after, expected[start + per_page :], per_page, f"{where}, then its cursor", first=False
                )

    async def check_everything(self) -> None:
        feeds = [self.feed(person) for person in self.present()]
        longest = max(len(feed) for feed in feeds)
        event(f"longest feed: {min(longest, 10)}{'+' if longest >= 10 else ''} records")
        if any(len({r.duration for r in feed}) < len(feed) for feed in feeds):
            event("a feed orders equal durations by id")
        for person in self.present():
            for per_page in (1, 3, None):
                await self.walk_feed(person, per_page)
            await self.check_offsets(person)


@pytest.mark.timeout(600)  # room for Hypothesis to shrink a failure (it gives up after 300 s) and report it
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # "explain" costs minutes here
)
@given(program=programs)
async def test_feed_matches_reference_model(api: Api, services: Services, program: Program) -> None:
    # Hypothesis runs many examples inside one test: each starts from empty tables and its own "now".
    await truncate(services.database.engine)
    runner = Runner(api, now_ms())
    for name in program.names:
        await runner.register(name)
    for index, op in enumerate(program.ops):
        await runner.run(op)
        if index == len(program.ops) // 2:
            await runner.run(CheckFeeds(per_page=2))
    await runner.check_everything()
