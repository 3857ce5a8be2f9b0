"""Account deletions racing the user's follows, clock-ins and nights, on SQLite, PostgreSQL and MariaDB.

As in ``test_concurrency``: never a 5xx but the contract's 503 for a deletion that cannot get its locks,
never a deadlock, and the database exact afterwards: no row of the deleted user left, every counter equal to
the active follows.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.deps import Services
from goodnight.socials import repository as follows
from tests.app.test_concurrency import (
    Outcome,
    assert_counters_exact,
    clock_in,
    clock_out,
    follow,
    outcome,
    race,
    unfollow,
)
from tests.support.api import Api, Member
from tests.support.times import ago, iso
from tests.users.test_account_deletion import NOTHING, rows_of

GONE = (401, "unauthorized")  # the user's token, once the deletion has committed


async def deleted_after_the_race(api: Api, victim: Member, response: httpx.Response) -> None:
    """The racing deletion succeeded, or found followers arriving too fast (503): then it succeeds now."""
    assert outcome(response) in {(204, None), (503, "service_unavailable")}, response.text
    if response.status_code == 503:
        again = await api.delete_account(victim)
        assert again.status_code == 204, again.text


async def test_a_deletion_racing_follows_both_ways_keeps_every_counter_exact(
    api: Api, services: Services
) -> None:
    shuffler = random.Random(7)
    crowd = [await api.register() for _ in range(8)]
    for round_number in range(3):
        victim = await api.register()
        for fan in crowd[round_number::2]:
            await api.follow(fan, victim)
        for idol in crowd[1 + round_number :: 3]:
            await api.follow(victim, idol)
        plan: list[tuple[str, Member, Member]] = [("delete", victim, victim)]
        for other in crowd:
            plan += [("follow", other, victim), ("unfollow", other, victim)]
            plan += [("follow", victim, other), ("unfollow", victim, other)]
            plan += [("follow", other, shuffler.choice([c for c in crowd if c is not other]))]
        shuffler.shuffle(plan)
        requests: list[Awaitable[httpx.Response]] = [
            api.delete_account(who)
            if action == "delete"
            else (follow if action == "follow" else unfollow)(api, who, whom)
            for action, who, whom in plan
        ]
        responses = await race(requests)

        for (action, who, whom), response in zip(plan, responses, strict=True):
            allowed: set[Outcome]
            if action == "delete":
                await deleted_after_the_race(api, victim, response)
                continue
            if who is victim:
                allowed = {GONE, (201, None), (200, None), (422, "already_following"), (422, "not_following")}
            elif whom is victim:
                allowed = {(404, "not_found"), (201, None), (200, None), (422, "already_following")}
                allowed.add((422, "not_following"))
            else:
                allowed = {(201, None), (422, "already_following")}
            assert outcome(response) in allowed, (action, response.text)
        assert await rows_of(services, victim) == NOTHING
        for member in crowd:
            await assert_counters_exact(api, services, member)


def log_night(api: Api, who: Member, days_ago: float) -> Awaitable[httpx.Response]:
    start = ago(days=days_ago)
    body = {"clocked_in_at": iso(start), "clocked_out_at": iso(ago(days=days_ago - 0.25))}
    return api.client.post("/sleep_records", json=body, headers=who.headers)


async def test_a_deletion_racing_the_users_own_nights_leaves_no_record_behind(
    api: Api, services: Services
) -> None:
    fan = await api.register()
    for _ in range(3):
        victim = await api.register()
        await api.follow(fan, victim)
        requests = [clock_in(api, victim), clock_out(api, victim), api.delete_account(victim)]
        requests += [log_night(api, victim, days) for days in (1, 2, 3, 1.1)]
        requests += [clock_in(api, victim), clock_out(api, victim)]
        responses = await race(requests)
        await deleted_after_the_race(api, victim, responses[2])
        for response in responses[:2] + responses[3:]:
            assert outcome(response) in {
                GONE,
                (201, None),
                (200, None),
                (400, "already_clocked_in"),
                (400, "not_clocked_in"),
                (422, "validation_error"),  # a night overlapping the one that won
            }, response.text
        assert await rows_of(services, victim) == NOTHING
        await assert_counters_exact(api, services, fan)
        assert await api.whole_feed(fan) == []


async def test_two_people_following_each_other_deleting_at_once(api: Api, services: Services) -> None:
    bystander = await api.register()
    for _ in range(3):
        alice, bob = await api.register(), await api.register()
        for who, whom in (
            (alice, bob),
            (bob, alice),
            (bystander, alice),
            (bystander, bob),
            (alice, bystander),
        ):
            await api.follow(who, whom)
        first, second = await race([api.delete_account(alice), api.delete_account(bob)])
        await deleted_after_the_race(api, alice, first)
        await deleted_after_the_race(api, bob, second)
        assert await rows_of(services, alice) == NOTHING
        assert await rows_of(services, bob) == NOTHING
        await assert_counters_exact(api, services, bystander)


# SQLite: the deletion's transaction holds the database's write lock from its first read on, so nobody can
# follow in between.
@pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)
async def test_followers_arriving_while_the_deletion_looks_around_are_counted_out_too(
    api: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim, early = await api.register(), await api.register()
    fans = [await api.register() for _ in range(4)]
    await api.follow(early, victim)
    around = follows.around
    calls = 0

    async def fans_arrive_meanwhile(session: AsyncSession, user_id: uuid.UUID) -> follows.Around:
        # Between the first look around (no locks yet) and the locks, four follows commit.
        nonlocal calls
        calls += 1
        found = await around(session, user_id)
        if calls == 1:
            for fan in fans:
                await api.follow(fan, victim)
        return found

    monkeypatch.setattr(follows, "around", fans_arrive_meanwhile)
    assert (await api.delete_account(victim)).status_code == 204
    assert calls == 2  # locked at the first attempt: none of the newcomers was busy
    assert await rows_of(services, victim) == NOTHING
    for member in (early, *fans):
        await assert_counters_exact(api, services, member)
