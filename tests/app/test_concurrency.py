"""Races through the HTTP API, on SQLite, PostgreSQL and MariaDB alike.

Every request of a race is started at once with ``asyncio.gather``. A race may be lost only with the
contract's 4xx for it: never a 500, never a deadlock, never an exception escaping the app; and the database
(not just the responses) ends up exact: one open sleep record, one follow row per pair, counters equal to the
active follows.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Iterable
from typing import Any

import httpx
import sqlalchemy as sa

from goodnight.deps import Services
from goodnight.models import Follow, SleepRecord, User
from goodnight.models.sleep_record import OPEN
from tests.support.api import PASSWORD, Api, Member

Outcome = tuple[int, str | None]


async def race(requests: Iterable[Awaitable[httpx.Response]]) -> list[httpx.Response]:
    """Run the requests concurrently; fail on any exception raised inside the app or any 5xx."""
    results = await asyncio.gather(*requests, return_exceptions=True)
    raised = [result for result in results if isinstance(result, BaseException)]
    if raised:
        raise AssertionError(
            f"{len(raised)} of {len(results)} concurrent requests raised inside the app; first: {raised[0]!r}"
        ) from raised[0]
    responses = [result for result in results if isinstance(result, httpx.Response)]
    server_errors = [
        f"{response.status_code} {response.text}" for response in responses if response.status_code >= 500
    ]
    assert not server_errors, f"{len(server_errors)} server errors, first: {server_errors[0]}"
    return responses


def outcome(response: httpx.Response) -> Outcome:
    """The status and, for errors, the envelope's code."""
    if response.status_code < 400:
        return response.status_code, None
    code: str = response.json()["error"]["code"]
    return response.status_code, code


def tally(responses: Iterable[httpx.Response]) -> Counter[Outcome]:
    return Counter(outcome(response) for response in responses)


async def user_json(api: Api, who: Member, user_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/users/{user_id}", headers=who.headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def counters(api: Api, who: Member) -> tuple[int, int]:
    """(followers_count, followings_count) as the API reports them."""
    user = await user_json(api, who, who.id)
    return user["followers_count"], user["followings_count"]


async def listed_ids(api: Api, who: Member, user_id: str, relation: str) -> set[str]:
    """Every id on /users/{id}/followers or /followings, following the cursor to the end."""
    ids: list[str] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        response = await api.client.get(f"/users/{user_id}/{relation}", params=params, headers=who.headers)
        assert response.status_code == 200, response.text
        ids.extend(item["id"] for item in response.json()["data"])
        cursor = response.json()["pagination"]["next_cursor"]
        if cursor is None:
            assert len(ids) == len(set(ids)), f"{relation} of {user_id} repeats someone: {ids}"
            return set(ids)
        params["cursor"] = cursor


async def count_rows(services: Services, query: sa.Select[int]) -> int:
    async with services.database.reader() as session:
        found = await session.scalar(query)
    assert found is not None
    return found


async def active_follows(
    services: Services, *, follower: Member | None = None, followed: Member | None = None
) -> int:
    query = sa.select(sa.func.count()).select_from(Follow).where(Follow.active.is_(True))
    if follower is not None:
        query = query.where(Follow.follower_id == uuid.UUID(follower.id))
    if followed is not None:
        query = query.where(Follow.followed_id == uuid.UUID(followed.id))
    return await count_rows(services, query)


async def stored_counters(services: Services, who: Member) -> tuple[int, int]:
    """(followers_count, followings_count) as stored, read straight from the users table."""
    async with services.database.reader() as session:
        row = (
            await session.execute(
                sa.select(User.followers_count, User.followings_count).where(User.id == uuid.UUID(who.id))
            )
        ).one()
    return row[0], row[1]


async def assert_counters_exact(api: Api, services: Services, who: Member) -> None:
    """Both counters of ``who`` equal the active follow rows, through the API and in the table."""
    expected = (
        await active_follows(services, followed=who),
        await active_follows(services, follower=who),
    )
    assert await counters(api, who) == expected, f"counters of {who.username} drifted from the follow rows"
    assert await stored_counters(services, who) == expected


def clock_in(api: Api, who: Member) -> Awaitable[httpx.Response]:
    return api.client.post("/sleep_records/clock_in", headers=who.headers)


def clock_out(api: Api, who: Member) -> Awaitable[httpx.Response]:
    return api.client.post("/sleep_records/clock_out", headers=who.headers)


def follow(api: Api, who: Member, whom: Member) -> Awaitable[httpx.Response]:
    return api.client.post(f"/socials/follow/{whom.id}", headers=who.headers)


def unfollow(api: Api, who: Member, whom: Member) -> Awaitable[httpx.Response]:
    return api.client.post(f"/socials/unfollow/{whom.id}", headers=who.headers)


# --- sleep records --------------------------------------------------------------------------------


async def test_fifty_parallel_clock_ins_open_exactly_one_record(api: Api, services: Services) -> None:
    sleeper = await api.register()

    responses = await race(clock_in(api, sleeper) for _ in range(50))

    assert tally(responses) == Counter({(201, None): 1, (400, "already_clocked_in"): 49})
    winner = next(response for response in responses if response.status_code == 201).json()
    owned = SleepRecord.user_id == uuid.UUID(sleeper.id)
    assert await count_rows(services, sa.select(sa.func.count()).select_from(SleepRecord).where(owned)) == 1
    open_records = (
        sa.select(sa.func.count()).select_from(SleepRecord).where(owned, SleepRecord.open_flag == OPEN)
    )
    assert await count_rows(services, open_records) == 1
    history = await api.client.get("/sleep_records", headers=sleeper.headers)
    assert history.status_code == 200, history.text
    assert [(item["id"], item["state"]) for item in history.json()["data"]] == [
        (winner["sleep_record_id"], "clocked_in")
    ]


async def test_parallel_clock_outs_close_the_record_exactly_once(api: Api, services: Services) -> None:
    sleeper = await api.register()
    owned = SleepRecord.user_id == uuid.UUID(sleeper.id)
    for night in range(1, 4):
        opened = await clock_in(api, sleeper)
        assert opened.status_code == 201, opened.text

        responses = await race(clock_out(api, sleeper) for _ in range(30))

        assert tally(responses) == Counter({(200, None): 1, (400, "not_clocked_in"): 29})
        closed = next(response for response in responses if response.status_code == 200).json()
        assert closed["sleep_record"]["id"] == opened.json()["sleep_record_id"]
        assert closed["sleep_record"]["state"] == "clocked_out"
        assert closed["duration"] == closed["sleep_record"]["duration"] >= 0
        open_records = (
            sa.select(sa.func.count()).select_from(SleepRecord).where(owned, SleepRecord.open_flag == OPEN)
        )
        assert await count_rows(services, open_records) == 0
        closed_records = (
            sa.select(sa.func.count()).select_from(SleepRecord).where(owned, SleepRecord.open_flag.is_(None))
        )
        assert await count_rows(services, closed_records) == night


async def test_clock_ins_and_clock_outs_racing_each_other_keep_one_open_record_at_most(
    api: Api, services: Services
) -> None:
    sleeper = await api.register()
    requests = [clock_in] * 20 + [clock_out] * 20
    random.Random(20261128).shuffle(requests)

    responses = await race(make(api, sleeper) for make in requests)

    opened = sum(1 for response in responses if response.status_code == 201)
    closed = sum(1 for response in responses if response.status_code == 200)
    # Clock-ins and clock-outs of one user are serialised, so successes alternate: in, out, in, out, ...
    assert opened - closed in (0, 1)
    owned = SleepRecord.user_id == uuid.UUID(sleeper.id)
    all_records = sa.select(sa.func.count()).select_from(SleepRecord).where(owned)
    assert await count_rows(services, all_records) == opened
    open_records = all_records.where(SleepRecord.open_flag == OPEN)
    assert await count_rows(services, open_records) == opened - closed


async def test_racing_clock_ins_and_outs_without_times_are_never_told_their_time_is_invalid(api: Api) -> None:
    """A request that sends no time gets the server's "now"; the server must not then reject that time.

    Of two racing requests one waits for the other's lock; the time it is given must be taken once it holds
    the lock, or the winner's record can end (or begin) after the loser's "now", and the loser is answered
    422 validation_error about a clocked_in_at / clocked_out_at it never sent.
    """
    sleeper = await api.register()
    requests = [clock_in] * 20 + [clock_out] * 20
    random.Random(20261128).shuffle(requests)

    responses = await race(make(api, sleeper) for make in requests)

    allowed = {(201, None), (400, "already_clocked_in"), (200, None), (400, "not_clocked_in")}
    unexpected = [
        f"{response.request.url.path} -> {response.status_code} {response.json()['error']['message']}"
        for response in responses
        if outcome(response) not in allowed
    ]
    assert not unexpected, f"{len(unexpected)} of {len(responses)} requests rejected: {unexpected[:3]}"


# --- follows --------------------------------------------------------------------------------------


async def test_thirty_parallel_follows_of_one_target_follow_once(api: Api, services: Services) -> None:
    fan, star = await api.register(), await api.register()

    responses = await race(follow(api, fan, star) for _ in range(30))

    assert tally(responses) == Counter({(201, None): 1, (422, "already_following"): 29})
    star_user = await user_json(api, fan, star.id)
    fan_user = await user_json(api, fan, fan.id)
    assert (star_user["followers_count"], star_user["followings_count"]) == (1, 0)
    assert (fan_user["followers_count"], fan_user["followings_count"]) == (0, 1)
    pair = (
        sa.select(sa.func.count())
        .select_from(Follow)
        .where(Follow.follower_id == uuid.UUID(fan.id), Follow.followed_id == uuid.UUID(star.id))
    )
    assert await count_rows(services, pair) == 1
    assert await listed_ids(api, fan, star.id, "followers") == {fan.id}


async def test_thirty_parallel_unfollows_unfollow_once(api: Api, services: Services) -> None:
    fan, star = await api.register(), await api.register()
    await api.follow(fan, star)

    responses = await race(unfollow(api, fan, star) for _ in range(30))

    assert tally(responses) == Counter({(200, None): 1, (422, "not_following"): 29})
    assert await counters(api, star) == (0, 0)
    assert await counters(api, fan) == (0, 0)
    await assert_counters_exact(api, services, star)


async def test_many_users_following_one_target_at_once_keep_the_counter_exact(
    api: Api, services: Services
) -> None:
    star = await api.register()
    fans = list(await asyncio.gather(*(api.register() for _ in range(40))))
    followed_back = fans[::2]

    # Everyone follows the star while the star follows half of them back: both lock orders at once.
    requests = [follow(api, fan, star) for fan in fans] + [follow(api, star, fan) for fan in followed_back]
    random.Random(7).shuffle(requests)
    responses = await race(requests)

    assert tally(responses) == Counter({(201, None): len(fans) + len(followed_back)})
    assert await counters(api, star) == (len(fans), len(followed_back))
    assert await listed_ids(api, star, star.id, "followers") == {fan.id for fan in fans}
    assert await listed_ids(api, star, star.id, "followings") == {fan.id for fan in followed_back}
    for fan in fans:
        assert await counters(api, fan) == (1 if fan in followed_back else 0, 1)
    await assert_counters_exact(api, services, star)

    # And all of it undone at once.
    requests = [unfollow(api, fan, star) for fan in fans] + [
        unfollow(api, star, fan) for fan in followed_back
    ]
    random.Random(8).shuffle(requests)
    responses = await race(requests)

    assert tally(responses) == Counter({(200, None): len(fans) + len(followed_back)})
    assert await counters(api, star) == (0, 0)
    assert await listed_ids(api, star, star.id, "followers") == set()
    for fan in fans:
        assert await counters(api, fan) == (0, 0)


async def test_follow_unfollow_churn_in_both_directions_never_deadlocks(api: Api, services: Services) -> None:
    alice, bob = await api.register(), await api.register()
    shuffler = random.Random(42)
    # Whether alice follows bob, and whether bob follows alice, as the successful requests have it.
    state = {(alice.id, bob.id): 0, (bob.id, alice.id): 0}

    for _ in range(8):
        plan: list[tuple[str, Member, Member]] = []
        for who, whom in ((alice, bob), (bob, alice)):
            plan += [("follow", who, whom)] * 3 + [("unfollow", who, whom)] * 3
        shuffler.shuffle(plan)

        responses = await race(
            (follow if action == "follow" else unfollow)(api, who, whom) for action, who, whom in plan
        )

        for (action, who, whom), response in zip(plan, responses, strict=True):
            if action == "follow":
                assert outcome(response) in {(201, None), (422, "already_following")}, response.text
                state[who.id, whom.id] += response.status_code == 201
            else:
                assert outcome(response) in {(200, None), (422, "not_following")}, response.text
                state[who.id, whom.id] -= response.status_code == 200
        # One pair's writes are serialised, so its successes alternate and the net effect is 0 or 1.
        assert set(state.values()) <= {0, 1}, state
        a_follows_b, b_follows_a = state[alice.id, bob.id], state[bob.id, alice.id]
        assert await counters(api, alice) == (b_follows_a, a_follows_b)
        assert await counters(api, bob) == (a_follows_b, b_follows_a)
        assert await listed_ids(api, alice, bob.id, "followers") == ({alice.id} if a_follows_b else set())
        assert await listed_ids(api, alice, alice.id, "followers") == ({bob.id} if b_follows_a else set())
        await assert_counters_exact(api, services, alice)
        await assert_counters_exact(api, services, bob)

    # Soft-deleted follows are reactivated: one row per direction, however much churn.
    assert await count_rows(services, sa.select(sa.func.count()).select_from(Follow)) <= 2


async def test_follow_churn_across_a_small_crowd_keeps_every_counter_exact(
    api: Api, services: Services
) -> None:
    crowd = list(await asyncio.gather(*(api.register() for _ in range(6))))
    shuffler = random.Random(99)
    plan = [
        (action, who, whom)
        for who in crowd
        for whom in crowd
        if who is not whom
        for action in ("follow", "follow", "unfollow")
    ]
    shuffler.shuffle(plan)

    await race((follow if action == "follow" else unfollow)(api, who, whom) for action, who, whom in plan)

    for member in crowd:
        await assert_counters_exact(api, services, member)


# --- registrations --------------------------------------------------------------------------------


def case_variants(word: str, count: int) -> list[str]:
    """``count`` distinct spellings of ``word`` that differ only in letter case."""
    variants = ["".join(c.upper() if bit >> i & 1 else c for i, c in enumerate(word)) for bit in range(count)]
    assert len(set(variants)) == count
    return variants


async def test_registrations_of_one_name_in_different_cases_create_one_user(
    api: Api, services: Services
) -> None:
    variants = case_variants("sleepyhead", 20)

    responses = await race(
        api.client.post("/users", json={"username": name, "password": PASSWORD}) for name in variants
    )

    assert tally(responses) == Counter({(201, None): 1, (409, "username_taken"): 19})
    created = next(response for response in responses if response.status_code == 201).json()
    assert created["username"] in variants
    users = sa.select(sa.func.count()).select_from(User).where(User.username_key == "sleepyhead")
    assert await count_rows(services, users) == 1
    assert await count_rows(services, sa.select(sa.func.count()).select_from(User)) == 1
    # The one account that exists is usable, under any spelling of its name.
    login = await api.client.post("/auth/login", json={"username": "SLEEPYHEAD", "password": PASSWORD})
    assert login.status_code == 200, login.text
    me = await api.client.get("/users/me", headers={"Authorization": f"Bearer {login.json()['token']}"})
    assert me.json()["id"] == created["id"]
