"""POST /auth/logout and PUT /users/me/password, on every backend and with Redis timelines."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

from goodnight.auth.passwords import HashSlot
from goodnight.deps import Services
from goodnight.models import User
from tests.support.api import PASSWORD, Api, Member
from tests.support.apps import client_for, running
from tests.support.databases import TestDatabase, settings_for, truncate
from tests.support.envelope import assert_error, assert_validation_error
from tests.support.hashing import connections_held_while_hashing

NEW_PASSWORD = "a brand new password"


async def login(api: Api, who: Member, password: str = PASSWORD) -> httpx.Response:
    return await api.client.post("/auth/login", json={"username": who.username, "password": password})


async def fresh_token(api: Api, who: Member, password: str = PASSWORD) -> Member:
    """The same person with another token, as from a second device."""
    response = await login(api, who, password)
    assert response.status_code == 200, response.text
    return Member(who.id, who.username, response.json()["token"])


async def logout(api: Api, who: Member) -> httpx.Response:
    return await api.client.post("/auth/logout", headers=who.headers)


async def change_password(
    api: Api, who: Member, current: str = PASSWORD, new: str = NEW_PASSWORD
) -> httpx.Response:
    body = {"current_password": current, "new_password": new}
    return await api.client.put("/users/me/password", json=body, headers=who.headers)


async def assert_accepted(api: Api, who: Member) -> None:
    me = await api.client.get("/users/me", headers=who.headers)
    assert me.status_code == 200, me.text
    assert me.json()["id"] == who.id


async def assert_refused(api: Api, who: Member) -> None:
    """Refused on every kind of route: a plain one, the feed's lean path, a write."""
    for response in (
        await api.client.get("/users/me", headers=who.headers),
        await api.feed(who),
        await api.client.get("/users", params={"q": who.username}, headers=who.headers),
        await logout(api, who),
    ):
        error = assert_error(response, 401, "unauthorized")
        assert "revoked" in error["message"], error


def assert_no_content(response: httpx.Response) -> None:
    assert response.status_code == 204, response.text
    assert response.content == b""


# --- logout -------------------------------------------------------------------------------------------------


async def test_logout_refuses_that_token_and_only_that_one(api: Api) -> None:
    laptop = await api.register("alice")
    phone = await fresh_token(api, laptop)
    await assert_accepted(api, laptop)  # verified once, so it sits in the verification cache
    assert_no_content(await logout(api, laptop))
    await assert_refused(api, laptop)
    await assert_accepted(api, phone)
    await assert_accepted(api, await fresh_token(api, laptop))  # and logging in again works


async def test_logout_of_someone_else_leaves_you_signed_in(api: Api) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    assert_no_content(await logout(api, bob))
    await assert_accepted(api, alice)


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}]
)
async def test_logout_needs_a_valid_token(api: Api, headers: dict[str, str]) -> None:
    alice = await api.register("alice")
    assert_error(await api.client.post("/auth/logout", headers=headers), 401, "unauthorized")
    await assert_accepted(api, alice)


async def test_logout_with_redis_timelines(timeline_api: Api) -> None:
    alice = await timeline_api.register("alice")
    phone = await fresh_token(timeline_api, alice)
    assert_no_content(await logout(timeline_api, alice))
    await assert_refused(timeline_api, alice)
    await assert_accepted(timeline_api, phone)


# --- password change ----------------------------------------------------------------------------------------


async def test_a_password_change_refuses_every_earlier_token_and_not_later_ones(api: Api) -> None:
    laptop = await api.register("alice")
    phone = await fresh_token(api, laptop)  # issued a moment before the change, most likely the same second
    await assert_accepted(api, laptop)
    assert_no_content(await change_password(api, phone))
    await assert_refused(api, laptop)
    await assert_refused(api, phone)
    assert_error(await login(api, laptop), 401, "invalid_credentials")
    # A login right after the change, within the same second, gets a token that works.
    after = await fresh_token(api, laptop, NEW_PASSWORD)
    await assert_accepted(api, after)
    assert (await api.client.get("/users/me", headers=after.headers)).json()["username"] == "alice"


async def test_a_login_that_checked_the_old_password_during_a_change_gets_a_revoked_token(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await api.register("alice")
    hashing, changed = asyncio.Event(), asyncio.Event()
    verify = HashSlot.verify

    async def held_first_time(slot: HashSlot, password_hash: str | None, password: str) -> bool:
        # The racing login has read the old hash and checks it; the change commits meanwhile.
        if not hashing.is_set():
            hashing.set()
            await changed.wait()
        return await verify(slot, password_hash, password)

    monkeypatch.setattr(HashSlot, "verify", held_first_time)
    racing_login = asyncio.create_task(login(api, alice))
    await hashing.wait()
    assert_no_content(await change_password(api, alice))
    changed.set()
    response = await racing_login
    assert response.status_code == 200, response.text  # the old password was right when it was read
    await assert_refused(api, Member(alice.id, alice.username, response.json()["token"]))


async def test_a_second_change_needs_the_new_password(api: Api) -> None:
    alice = await api.register("alice")
    assert_no_content(await change_password(api, alice))
    alice = await fresh_token(api, alice, NEW_PASSWORD)
    assert_error(
        await change_password(api, alice, current=PASSWORD, new="third password"), 401, "invalid_credentials"
    )
    assert_no_content(await change_password(api, alice, current=NEW_PASSWORD, new="third password"))
    await assert_refused(api, alice)
    await assert_accepted(api, await fresh_token(api, alice, "third password"))


async def test_a_wrong_current_password_changes_nothing(api: Api) -> None:
    alice = await api.register("alice")
    error = assert_error(
        await change_password(api, alice, current="not my password"), 401, "invalid_credentials"
    )
    assert "current password" in error["message"]
    await assert_accepted(api, alice)
    await assert_accepted(api, await fresh_token(api, alice))  # the old password still works
    assert_error(await login(api, alice, NEW_PASSWORD), 401, "invalid_credentials")


async def test_changing_someone_elses_password_is_impossible(api: Api) -> None:
    alice, mallory = await api.register("alice"), await api.register("mallory")
    assert_no_content(await change_password(api, mallory))  # the route only ever acts on the caller
    await assert_accepted(api, alice)
    await assert_accepted(api, await fresh_token(api, alice))


async def test_a_password_change_needs_a_valid_unrevoked_token(api: Api) -> None:
    alice = await api.register("alice")
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = await api.client.put("/users/me/password", json=body, headers=headers)
        assert_error(response, 401, "unauthorized")
    phone = await fresh_token(api, alice)
    assert_no_content(await logout(api, alice))
    assert_error(await change_password(api, alice), 401, "unauthorized")
    await assert_accepted(api, await fresh_token(api, phone))  # the password did not change


BAD_BODIES: dict[str, tuple[Any, str]] = {
    "no-body": (None, "body"),
    "empty": ({}, "current_password"),
    "no-new": ({"current_password": PASSWORD}, "new_password"),
    "no-current": ({"new_password": NEW_PASSWORD}, "current_password"),
    "new-too-short": ({"current_password": PASSWORD, "new_password": "short77"}, "new_password"),
    "new-too-long": ({"current_password": PASSWORD, "new_password": "x" * 129}, "new_password"),
    "current-too-long": (
        {"current_password": "x" * 1025, "new_password": NEW_PASSWORD},
        "current_password",
    ),
    "new-not-text": ({"current_password": PASSWORD, "new_password": 12345678}, "new_password"),
    # As a client's JSON encoder may write it; no database or hash function can encode it.
    "lone-surrogate": (b'{"current_password": "x", "new_password": "abcdefg\\ud800"}', "new_password"),
    "not-json": (b'{"current_password": ', "body"),
}


@pytest.mark.parametrize(("body", "field"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_a_malformed_password_change_is_422_and_changes_nothing(
    api: Api, body: Any, field: str
) -> None:
    alice = await api.register("alice")
    if isinstance(body, bytes):
        headers = {**alice.headers, "Content-Type": "application/json"}
        response = await api.client.put("/users/me/password", content=body, headers=headers)
    else:
        response = await api.client.put("/users/me/password", json=body, headers=alice.headers)
    assert_validation_error(response, field)
    await assert_accepted(api, alice)
    await assert_accepted(api, await fresh_token(api, alice))


async def test_of_two_racing_changes_exactly_one_wins(api: Api) -> None:
    alice = await api.register("alice")
    first, second = "first new password", "second new password"
    responses = await asyncio.gather(
        change_password(api, alice, new=first), change_password(api, alice, new=second)
    )
    statuses = sorted(response.status_code for response in responses)
    # The loser is refused at the UPDATE (409), or, if it came late, already at its token (401 revoked).
    assert statuses in ([204, 409], [204, 401]), [response.text for response in responses]
    winners = [
        password for password in (first, second) if (await login(api, alice, password)).status_code == 200
    ]
    assert len(winners) == 1, winners
    await assert_refused(api, alice)


async def test_a_change_that_lost_a_race_is_409_and_changes_nothing(
    api: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await api.register("alice")
    meanwhile = "changed meanwhile"
    other_hash = await services.passwords.hash(meanwhile)
    hash_password = HashSlot.hash

    async def hash_while_another_change_commits(slot: HashSlot, password: str) -> str:
        # Between this request's read of the hash and its write, another request changes the password.
        async with services.database.writer() as session:
            await session.execute(
                sa.update(User).where(User.id == uuid.UUID(alice.id)).values(password_hash=other_hash)
            )
            await session.commit()
        return await hash_password(slot, password)

    monkeypatch.setattr(HashSlot, "hash", hash_while_another_change_commits)
    assert_error(await change_password(api, alice), 409, "password_changed")
    monkeypatch.undo()
    assert (await login(api, alice, meanwhile)).status_code == 200
    assert_error(await login(api, alice, NEW_PASSWORD), 401, "invalid_credentials")
    await assert_accepted(api, alice)  # the losing request revoked nothing


async def test_a_password_change_with_redis_timelines(timeline_api: Api) -> None:
    alice = await timeline_api.register("alice")
    assert_no_content(await change_password(timeline_api, alice))
    await assert_refused(timeline_api, alice)
    await assert_accepted(timeline_api, await fresh_token(timeline_api, alice, NEW_PASSWORD))


# --- hashing without holding the database, and behind the gate ----------------------------------------------


async def test_hashing_holds_no_database_connection(
    api: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await api.register("alice")
    pool = services.database.engine.pool
    assert isinstance(pool, QueuePool)
    checked_out = connections_held_while_hashing(monkeypatch, pool)
    assert_no_content(await change_password(api, alice))
    assert checked_out == [0, 0]  # the check of the current password, the hash of the new one


# A hash of about a tenth of a second, one at a time, and hardly any wait for a slot: concurrent changes
# beyond the first find the gate taken.
HASH_GATE: dict[str, Any] = {
    "hash_concurrency": 1,
    "hash_wait_seconds": 0.02,
    "argon2_time_cost": 200,
    "argon2_memory_kib": 1024,
    "argon2_parallelism": 1,
}


@contextlib.asynccontextmanager
async def gated_api(database: TestDatabase) -> AsyncIterator[Api]:
    async with running(settings_for(database.url, **HASH_GATE)) as app:
        await truncate(app.state.services.database.engine)
        async with client_for(app) as http:
            yield Api(http)


async def some_refused_at_the_gate(
    api: Api,
    act: Callable[[Api, Member], Awaitable[httpx.Response]],
    assert_done: Callable[[httpx.Response], None],
) -> list[Member]:
    """Four people act at once behind a one-slot hash gate: those refused get 503 ``overloaded`` and are
    still signed in, the others are done. Returns the refused (at least one)."""
    people = [await api.register(f"sleeper{number}") for number in range(4)]
    responses = await asyncio.gather(*(act(api, person) for person in people))
    refused = [
        person for person, response in zip(people, responses, strict=True) if response.status_code == 503
    ]
    assert refused, [response.status_code for response in responses]
    for person, response in zip(people, responses, strict=True):
        if person in refused:
            assert_error(response, 503, "overloaded")
            assert int(response.headers["retry-after"]) >= 1
            await assert_accepted(api, person)
        else:
            assert_done(response)
    return refused


async def test_changes_beyond_the_hash_gate_are_503_overloaded_and_change_nothing(
    database: TestDatabase,
) -> None:
    async with gated_api(database) as api:
        refused = await some_refused_at_the_gate(api, change_password, assert_no_content)
        # The refused kept their password; the gate is free again for a retry.
        assert (await login(api, refused[0])).status_code == 200
        assert_no_content(await change_password(api, refused[0]))
