"""POST /socials/follow/{id} and /socials/unfollow/{id}: status codes, error codes and exact counters."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.support.api import Api, Member
from tests.support.envelope import assert_error, assert_request_id

BAD_IDS = [
    pytest.param(str(uuid.uuid4()), id="unknown-uuid"),
    pytest.param("00000000-0000-0000-0000-000000000000", id="nil-uuid"),
    pytest.param("abc", id="abc"),
    pytest.param("a" * 5000, id="very-long"),
    pytest.param("1; DROP TABLE follows", id="sql"),
]


async def follow(client: httpx.AsyncClient, who: Member, target_id: str) -> httpx.Response:
    return await client.post(f"/socials/follow/{target_id}", headers=who.headers)


async def unfollow(client: httpx.AsyncClient, who: Member, target_id: str) -> httpx.Response:
    return await client.post(f"/socials/unfollow/{target_id}", headers=who.headers)


async def counters(api: Api, member: Member) -> tuple[int, int]:
    """(followers_count, followings_count) as GET /users/{id} reports them."""
    response = await api.client.get(f"/users/{member.id}", headers=member.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["followers_count"], body["followings_count"]


async def list_ids(api: Api, member: Member, kind: str) -> list[str]:
    response = await api.client.get(
        f"/users/{member.id}/{kind}", params={"limit": 100}, headers=member.headers
    )
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


async def assert_consistent(api: Api, member: Member, followers: int, followings: int) -> None:
    """Counters are exact, and agree with the lists they count."""
    assert await counters(api, member) == (followers, followings), member.username
    assert len(await list_ids(api, member, "followers")) == followers
    assert len(await list_ids(api, member, "followings")) == followings


def assert_message(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert_request_id(response)
    body = response.json()
    assert set(body) == {"message"}, body
    assert isinstance(body["message"], str)
    assert body["message"].strip()


# --- follow ------------------------------------------------------------------------------------------------


async def test_follow_is_201_with_a_message(api: Api, client: httpx.AsyncClient) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    assert_message(await follow(client, alice, bob.id), 201)
    assert await list_ids(api, bob, "followers") == [alice.id]
    assert await list_ids(api, alice, "followings") == [bob.id]
    await assert_consistent(api, alice, 0, 1)
    await assert_consistent(api, bob, 1, 0)


async def test_follow_accepts_any_spelling_of_the_uuid(api: Api, client: httpx.AsyncClient) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    assert_message(await follow(client, alice, bob.id.upper()), 201)
    assert_error(await follow(client, alice, bob.id.replace("-", "")), 422, "already_following")
    await assert_consistent(api, bob, 1, 0)


@pytest.mark.parametrize("spelling", ["as-is", "upper", "no-dashes"])
async def test_cannot_follow_self(api: Api, client: httpx.AsyncClient, spelling: str) -> None:
    alice = await api.register("alice")
    own_id = {"as-is": alice.id, "upper": alice.id.upper(), "no-dashes": alice.id.replace("-", "")}[spelling]
    assert_error(await follow(client, alice, own_id), 400, "cannot_follow_self")
    await assert_consistent(api, alice, 0, 0)


@pytest.mark.parametrize("target_id", BAD_IDS)
async def test_follow_unknown_or_malformed_id_is_404(
    api: Api, client: httpx.AsyncClient, target_id: str
) -> None:
    alice = await api.register("alice")
    assert_error(await follow(client, alice, target_id), 404, "not_found")
    await assert_consistent(api, alice, 0, 0)


async def test_follow_twice_is_422_already_following(api: Api, client: httpx.AsyncClient) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    await api.follow(alice, bob)
    assert_error(await follow(client, alice, bob.id), 422, "already_following")
    assert_error(await follow(client, alice, bob.id), 422, "already_following")
    await assert_consistent(api, alice, 0, 1)
    await assert_consistent(api, bob, 1, 0)


async def test_following_back_is_not_already_following(api: Api, client: httpx.AsyncClient) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    await api.follow(alice, bob)
    assert_message(await follow(client, bob, alice.id), 201)
    await assert_consistent(api, alice, 1, 1)
    await assert_consistent(api, bob, 1, 1)


# --- unfollow ----------------------------------------------------------------------------------------------


async def test_unfollow_is_200_with_a_message(api: Api, client: httpx.AsyncClient) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    await api.follow(alice, bob)
    assert_message(await unfollow(client, alice, bob.id), 200)
    assert await list_ids(api, bob, "followers") == []
    assert await list_ids(api, alice, "followings") == []
    await assert_consistent(api, alice, 0, 0)
    await assert_consistent(api, bob, 0, 0)


async def test_unfollow_never_followed_is_422_not_following(api: Api, client: httpx.AsyncClient) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    assert_error(await unfollow(client, alice, bob.id), 422, "not_following")
    await assert_consistent(api, alice, 0, 0)
    await assert_consistent(api, bob, 0, 0)


async def test_unfollow_when_only_followed_back_is_422(api: Api, client: httpx.AsyncClient) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    await api.follow(bob, alice)
    assert_error(await unfollow(client, alice, bob.id), 422, "not_following")
    await assert_consistent(api, alice, 1, 0)
    await assert_consistent(api, bob, 0, 1)


async def test_unfollow_twice_is_422_not_following(api: Api, client: httpx.AsyncClient) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    await api.follow(alice, bob)
    await api.unfollow(alice, bob)
    assert_error(await unfollow(client, alice, bob.id), 422, "not_following")
    assert_error(await unfollow(client, alice, bob.id), 422, "not_following")
    # Counters never go below zero.
    await assert_consistent(api, alice, 0, 0)
    await assert_consistent(api, bob, 0, 0)


@pytest.mark.parametrize("target_id", BAD_IDS)
async def test_unfollow_unknown_or_malformed_id_is_404(
    api: Api, client: httpx.AsyncClient, target_id: str
) -> None:
    alice = await api.register("alice")
    assert_error(await unfollow(client, alice, target_id), 404, "not_found")


async def test_unfollow_self_is_refused_without_side_effects(api: Api, client: httpx.AsyncClient) -> None:
    alice = await api.register("alice")
    response = await unfollow(client, alice, alice.id)
    # The contract lists only 404 and 422 not_following for unfollow; "you cannot follow yourself" is a
    # defensible answer too. Either way it is an enveloped client error that changes nothing.
    if response.status_code == 400:
        assert_error(response, 400, "cannot_follow_self")
    else:
        assert_error(response, 422, "not_following")
    await assert_consistent(api, alice, 0, 0)


# --- re-follow and counters --------------------------------------------------------------------------------


async def test_refollow_after_unfollow(api: Api, client: httpx.AsyncClient) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    for _ in range(3):
        assert_message(await follow(client, alice, bob.id), 201)
        await assert_consistent(api, bob, 1, 0)
        assert await list_ids(api, bob, "followers") == [alice.id]
        assert_message(await unfollow(client, alice, bob.id), 200)
        await assert_consistent(api, bob, 0, 0)
        assert await list_ids(api, bob, "followers") == []
    assert_message(await follow(client, alice, bob.id), 201)
    assert_error(await follow(client, alice, bob.id), 422, "already_following")
    await assert_consistent(api, alice, 0, 1)
    await assert_consistent(api, bob, 1, 0)


async def test_counters_exact_through_a_sequence(api: Api, client: httpx.AsyncClient) -> None:
    a, b, c, d = [await api.register(name) for name in ("aaa", "bbb", "ccc", "ddd")]
    for who, whom in [(a, b), (c, b), (d, b), (a, c), (b, a), (a, d)]:
        await api.follow(who, whom)
    await assert_consistent(api, a, 1, 3)
    await assert_consistent(api, b, 3, 1)
    await assert_consistent(api, c, 1, 1)
    await assert_consistent(api, d, 1, 1)

    await api.unfollow(a, b)
    await api.unfollow(c, b)
    assert_error(await unfollow(client, c, b.id), 422, "not_following")
    assert_error(await follow(client, d, b.id), 422, "already_following")
    assert_error(await follow(client, b, b.id), 400, "cannot_follow_self")
    await assert_consistent(api, a, 1, 2)
    await assert_consistent(api, b, 1, 1)
    await assert_consistent(api, c, 1, 0)

    await api.follow(a, b)
    await api.follow(c, a)
    await api.unfollow(b, a)
    await api.follow(b, a)
    await assert_consistent(api, a, 2, 3)
    await assert_consistent(api, b, 2, 1)
    await assert_consistent(api, c, 1, 1)
    await assert_consistent(api, d, 1, 1)

    for who, whom in [(a, b), (a, c), (a, d), (b, a), (c, a), (d, b)]:
        await api.unfollow(who, whom)
    for member in (a, b, c, d):
        await assert_consistent(api, member, 0, 0)


async def test_concurrent_duplicate_follows_count_once(api: Api, client: httpx.AsyncClient) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    responses = await asyncio.gather(*(follow(client, alice, bob.id) for _ in range(10)))
    assert sorted(response.status_code for response in responses) == [201] + [422] * 9
    for response in responses:
        if response.status_code == 422:
            assert_error(response, 422, "already_following")
    await assert_consistent(api, alice, 0, 1)
    await assert_consistent(api, bob, 1, 0)


async def test_concurrent_follows_of_one_target_all_count(api: Api, client: httpx.AsyncClient) -> None:
    target = await api.register("target")
    fans = [await api.register(f"fan_{index}") for index in range(10)]
    responses = await asyncio.gather(*(follow(client, fan, target.id) for fan in fans))
    assert [response.status_code for response in responses] == [201] * 10
    await assert_consistent(api, target, 10, 0)
    responses = await asyncio.gather(*(unfollow(client, fan, target.id) for fan in fans[:4]))
    assert [response.status_code for response in responses] == [200] * 4
    await assert_consistent(api, target, 6, 0)
