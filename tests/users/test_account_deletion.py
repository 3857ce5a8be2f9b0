"""DELETE /users/me on every backend: what goes, what is put right, every error, and tokens refused."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import QueuePool

from goodnight.auth.passwords import HashSlot
from goodnight.deps import Services
from goodnight.middleware import MAX_BODY_BYTES
from goodnight.models import Follow, SleepRecord, User
from goodnight.socials import repository as follows
from goodnight.users import repository as users
from tests.app.test_concurrency import assert_counters_exact, listed_ids
from tests.app.test_serve import register_and_login
from tests.auth.test_revocation import (
    BOUND_S,
    SLACK_S,
    another_server,
    refused_everywhere_within_the_bound,
    refused_on_fresh_connections,
    seconds_until_refused,
)
from tests.support.api import PASSWORD, Api, Member
from tests.support.databases import TestDatabase
from tests.support.envelope import assert_error, assert_validation_error
from tests.support.processes import clean_env, serving
from tests.support.worker_sockets import one_client_per_worker
from tests.timeline.test_timeline import night
from tests.users.test_account import assert_accepted, assert_refused, gated_api, some_refused_at_the_gate


def assert_deleted(response: httpx.Response) -> None:
    assert response.status_code == 204, response.text
    assert response.content == b""


async def rows_of(services: Services, who: Member) -> dict[str, int]:
    """How many rows of each table still belong to ``who``."""
    user_id = uuid.UUID(who.id)
    queries = {
        "users": sa.select(sa.func.count()).select_from(User).where(User.id == user_id),
        "sleep_records": sa.select(sa.func.count())
        .select_from(SleepRecord)
        .where(SleepRecord.user_id == user_id),
        "follows": sa.select(sa.func.count())
        .select_from(Follow)
        .where(sa.or_(Follow.follower_id == user_id, Follow.followed_id == user_id)),
    }
    async with services.database.reader() as session:
        return {table: int(await session.scalar(query) or 0) for table, query in queries.items()}


NOTHING = {"users": 0, "sleep_records": 0, "follows": 0}


async def a_life(api: Api) -> tuple[Member, list[Member]]:
    """Alice follows Bob and Carol, Dave and Bob follow her, she once followed Erin (an inactive row), and
    she has slept (two nights, and an open record)."""
    alice, bob, carol, dave, erin = [
        await api.register(name) for name in ("alice", "bob", "carol", "dave", "erin")
    ]
    for who, whom in ((alice, bob), (alice, carol), (dave, alice), (bob, alice), (alice, erin)):
        await api.follow(who, whom)
    await api.unfollow(alice, erin)
    await night(api, alice, 2, 8)
    await night(api, alice, 1, 7)
    opened = await api.client.post("/sleep_records/clock_in", headers=alice.headers)
    assert opened.status_code == 201, opened.text
    return alice, [bob, carol, dave, erin]


# --- what a deletion does -----------------------------------------------------------------------------------


async def test_the_user_their_records_and_follows_go_and_every_counter_is_put_right(
    api: Api, services: Services
) -> None:
    alice, others = await a_life(api)
    bob, carol, dave, _ = others
    assert (await rows_of(services, alice))["follows"] == 5
    assert_deleted(await api.delete_account(alice))
    assert await rows_of(services, alice) == NOTHING
    for member in others:
        await assert_counters_exact(api, services, member)
    assert await listed_ids(api, bob, bob.id, "followers") == set()
    assert await listed_ids(api, bob, bob.id, "followings") == set()
    assert await listed_ids(api, dave, dave.id, "followings") == set()
    assert await listed_ids(api, carol, carol.id, "followers") == set()
    gone = await api.client.get(f"/users/{alice.id}", headers=bob.headers)
    assert_error(gone, 404, "not_found")
    assert await api.whole_feed(dave) == []
    assert await api.whole_feed(bob) == []


async def test_every_token_of_the_user_is_refused_everywhere_in_the_api(api: Api) -> None:
    alice = await api.register("alice")
    phone = await fresh_login(api, alice)
    assert_deleted(await api.delete_account(alice))
    for token in (alice, phone):
        await assert_refused(api, token)
        assert_error(await api.rename(token, "Zombie"), 401, "unauthorized")
        assert_error(await api.delete_account(token), 401, "unauthorized")
    login = await api.client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert_error(login, 401, "invalid_credentials")


async def fresh_login(api: Api, who: Member, password: str = PASSWORD) -> Member:
    response = await api.client.post("/auth/login", json={"username": who.username, "password": password})
    assert response.status_code == 200, response.text
    return Member(who.id, who.username, response.json()["token"])


async def test_the_username_is_free_again_for_someone_new(api: Api, services: Services) -> None:
    alice, others = await a_life(api)
    bob = others[0]
    old_records = (await api.client.get("/sleep_records", headers=alice.headers)).json()["data"]
    assert_deleted(await api.delete_account(alice))
    newcomer = await api.register("Alice")  # the same name, in another letter case
    assert newcomer.id != alice.id
    me = (await api.client.get("/users/me", headers=newcomer.headers)).json()
    assert (me["username"], me["name"], me["followers_count"], me["followings_count"]) == (
        "Alice",
        None,
        0,
        0,
    )
    history = await api.client.get("/sleep_records", headers=newcomer.headers)
    assert history.json()["data"] == []
    for record in old_records:
        found = await api.client.get(f"/sleep_records/{record['id']}", headers=newcomer.headers)
        assert_error(found, 404, "not_found")
    assert await listed_ids(api, bob, newcomer.id, "followers") == set()
    await assert_refused(api, alice)  # the old token means the old account, not the new one
    await assert_counters_exact(api, services, bob)


async def test_deleting_someone_with_nobody_around_them(api: Api, services: Services) -> None:
    loner = await api.register("loner")
    assert_deleted(await api.delete_account(loner))
    assert await rows_of(services, loner) == NOTHING


# --- errors -------------------------------------------------------------------------------------------------


async def test_a_wrong_password_is_401_and_deletes_nothing(api: Api, services: Services) -> None:
    alice, _ = await a_life(api)
    before = await rows_of(services, alice)
    error = assert_error(await api.delete_account(alice, "not my password"), 401, "invalid_credentials")
    assert "password" in error["message"]
    assert await rows_of(services, alice) == before
    await assert_accepted(api, alice)
    await assert_accepted(api, await fresh_login(api, alice))


async def test_deletion_needs_a_valid_unrevoked_token(api: Api, services: Services) -> None:
    alice = await api.register("alice")
    body = orjson.dumps({"password": PASSWORD})
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
        response = await api.client.request("DELETE", "/users/me", content=body, headers=headers)
        assert_error(response, 401, "unauthorized")
    phone = await fresh_login(api, alice)
    assert (await api.client.post("/auth/logout", headers=alice.headers)).status_code == 204
    assert_error(await api.delete_account(alice), 401, "unauthorized")
    assert (await rows_of(services, alice))["users"] == 1
    await assert_accepted(api, phone)


BAD_BODIES: dict[str, tuple[Any, str]] = {
    "empty-object": ({}, "password"),
    "password-null": ({"password": None}, "password"),
    "password-int": ({"password": 12345678}, "password"),
    "password-list": ({"password": [PASSWORD]}, "password"),
    "password-too-long": ({"password": "x" * 1025}, "password"),
    "lone-surrogate": (b'{"password": "abcdefg\\ud800"}', "password"),
    "array": ([PASSWORD], "body"),
    "not-json": (b'{"password": ', "body"),
    "no-body": (None, "body"),
}


@pytest.mark.parametrize(("body", "field"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_a_malformed_body_is_422_and_deletes_nothing(
    api: Api, services: Services, body: Any, field: str
) -> None:
    alice = await api.register("alice")
    headers = {**alice.headers, "Content-Type": "application/json"}
    content = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    response = await api.client.request("DELETE", "/users/me", content=content, headers=headers)
    assert_validation_error(response, field)
    assert (await rows_of(services, alice))["users"] == 1
    await assert_accepted(api, alice)


async def test_a_body_past_the_limit_is_413_and_deletes_nothing(api: Api, services: Services) -> None:
    alice = await api.register("alice")
    body = orjson.dumps({"password": "x" * (MAX_BODY_BYTES + 1)})
    headers = {**alice.headers, "Content-Type": "application/json"}
    response = await api.client.request("DELETE", "/users/me", content=body, headers=headers)
    assert_error(response, 413, "payload_too_large")
    assert (await rows_of(services, alice))["users"] == 1


async def test_a_password_changed_while_it_was_checked_is_409_and_deletes_nothing(
    api: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, _ = await a_life(api)
    before = await rows_of(services, alice)
    other_hash = await services.passwords.hash("changed meanwhile")
    verify = HashSlot.verify

    async def verify_while_the_password_changes(
        slot: HashSlot, password_hash: str | None, password: str
    ) -> bool:
        async with services.database.writer() as session:
            await session.execute(
                sa.update(User).where(User.id == uuid.UUID(alice.id)).values(password_hash=other_hash)
            )
            await session.commit()
        return await verify(slot, password_hash, password)

    monkeypatch.setattr(HashSlot, "verify", verify_while_the_password_changes)
    assert_error(await api.delete_account(alice), 409, "password_changed")
    monkeypatch.undo()
    assert await rows_of(services, alice) == before
    await assert_accepted(api, alice)


async def test_the_password_check_holds_no_database_connection(
    api: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await api.register("alice")
    pool = services.database.engine.pool
    assert isinstance(pool, QueuePool)
    checked_out: list[int] = []
    verify = HashSlot.verify

    async def verify_watched(slot: HashSlot, password_hash: str | None, password: str) -> bool:
        checked_out.append(pool.checkedout())
        return await verify(slot, password_hash, password)

    monkeypatch.setattr(HashSlot, "verify", verify_watched)
    assert_deleted(await api.delete_account(alice))
    assert checked_out == [0]


async def test_deletions_beyond_the_hash_gate_are_503_overloaded_and_delete_nothing(
    database: TestDatabase,
) -> None:
    async with gated_api(database) as api:
        refused = await some_refused_at_the_gate(api, Api.delete_account, assert_deleted)
        assert_deleted(await api.delete_account(refused[0]))


# --- locking the people around the user ---------------------------------------------------------------------


async def test_someone_who_followed_between_the_first_read_and_the_locks_is_locked_too(
    api: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, others = await a_life(api)
    around = follows.around
    lock_if_free = users.lock_if_free
    reads: list[follows.Around] = []
    tries: list[set[uuid.UUID]] = []

    async def first_read_misses_everyone(session: Any, user_id: uuid.UUID) -> follows.Around:
        found = await around(session, user_id)
        reads.append(found)
        return follows.Around([], []) if len(reads) == 1 else found

    async def taken_the_first_time(session: Any, user_ids: Any) -> set[uuid.UUID]:
        tries.append(set(user_ids))
        return set() if len(tries) == 1 else await lock_if_free(session, user_ids)

    monkeypatch.setattr(follows, "around", first_read_misses_everyone)
    monkeypatch.setattr(users, "lock_if_free", taken_the_first_time)
    assert_deleted(await api.delete_account(alice))
    # The first attempt found three people it had not locked, could not lock them without waiting, and
    # started over with them: the second found nobody new.
    assert [len(tried) for tried in tries] == [3]
    assert len(reads) == 3
    monkeypatch.undo()
    assert await rows_of(services, alice) == NOTHING
    for member in others:
        await assert_counters_exact(api, services, member)


async def test_followers_arriving_faster_than_the_locks_is_503_and_deletes_nothing(
    api: Api, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, others = await a_life(api)
    before = await rows_of(services, alice)
    around = follows.around

    async def always_someone_new(session: Any, user_id: uuid.UUID) -> follows.Around:
        found = await around(session, user_id)
        return follows.Around([*found.followers, uuid.uuid4()], found.followings)

    monkeypatch.setattr(follows, "around", always_someone_new)
    response = await api.delete_account(alice)
    monkeypatch.undo()
    assert_error(response, 503, "service_unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert await rows_of(services, alice) == before
    for member in others:
        await assert_counters_exact(api, services, member)
    assert_deleted(await api.delete_account(alice))


# --- other processes ----------------------------------------------------------------------------------------


async def test_another_process_refuses_the_deleted_users_tokens_within_a_second(
    api: Api, database: TestDatabase
) -> None:
    async with another_server(database) as other:
        alice, bob = await api.register("alice"), await api.register("bob")
        await api.follow(alice, bob)
        # The feed never asks the database about the reader: only the revocation can refuse it there.
        assert (await other.feed(alice)).status_code == 200
        assert_deleted(await api.delete_account(alice))
        assert (await api.feed(alice)).status_code == 401  # the process that deleted it: at once
        elapsed = await seconds_until_refused(other, alice, path="/sleep_records/followings")
        assert elapsed < BOUND_S + SLACK_S, elapsed
        await assert_accepted(other, bob)


def test_every_worker_of_goodnight_serve_refuses_the_deleted_users_token(tmp_path: Path) -> None:
    feed = "/sleep_records/followings"  # asks nothing of the database about the reader
    with serving(tmp_path, clean_env(), "--workers", "2") as server:
        with one_client_per_worker(server, workers=2) as clients:
            first, second = list(clients)
            alice = register_and_login(clients[first], "alice")
            bob = register_and_login(clients[second], "bob")
            assert clients[first].post(f"/socials/follow/{bob.id}", headers=alice.headers).status_code == 201
            for client in clients.values():  # verified, and cached, by both workers
                assert client.get(feed, headers=alice.headers).status_code == 200
            deleted = clients[second].request(
                "DELETE", "/users/me", json={"password": PASSWORD}, headers=alice.headers
            )
            assert_deleted(deleted)
            assert clients[second].get(feed, headers=alice.headers).status_code == 401  # at once there
            waited = refused_everywhere_within_the_bound(clients, alice.token, feed)
            assert max(waited.values()) < BOUND_S + SLACK_S, waited
            refused_on_fresh_connections(server, alice.token, path=feed)
            newcomer = register_and_login(clients[first], "alice")
            assert newcomer.id != alice.id
            for client in clients.values():
                assert client.get(feed, headers=newcomer.headers).status_code == 200
                bob_now = client.get(f"/users/{bob.id}", headers=bob.headers).json()
                assert bob_now["followers_count"] == 0
        assert "Traceback" not in server.log()
