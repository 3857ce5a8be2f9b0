"""POST /users, GET /users/me, GET /users/{id} and the followers/followings lists."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.support.api import PASSWORD, Api, Member
from tests.support.envelope import assert_error, assert_request_id, assert_validation_error

USER_KEYS = {"id", "username", "name", "created_at", "followers_count", "followings_count"}
SUMMARY_KEYS = {"id", "username", "name"}
UTC_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
KINDS = ("followers", "followings")
# followed_at has millisecond precision: a short pause makes "newest first" unambiguous between two follows.
FOLLOW_GAP_S = 0.003


async def create_user(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post("/users", json=body)


def assert_user(body: Any, *, username: str, name: str | None = None) -> None:
    assert isinstance(body, dict), body
    assert set(body) == USER_KEYS, body
    assert uuid.UUID(body["id"]).version == 7, body["id"]
    assert body["username"] == username
    assert body["name"] == name
    assert UTC_TIMESTAMP.match(body["created_at"]), body["created_at"]
    created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=1), body["created_at"]
    assert isinstance(body["followers_count"], int)
    assert isinstance(body["followings_count"], int)


def forged_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode("ascii")


async def list_page(api: Api, kind: str, of: Member, viewer: Member, **params: Any) -> httpx.Response:
    return await api.client.get(f"/users/{of.id}/{kind}", params=params, headers=viewer.headers)


async def whole_list(api: Api, kind: str, of: Member, viewer: Member, limit: int) -> list[list[str]]:
    """Every page of a followers/followings list, as lists of usernames, following next_cursor."""
    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        response = await list_page(api, kind, of, viewer, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "pagination"}, body
        assert set(body["pagination"]) == {"next_cursor"}, body
        for item in body["data"]:
            assert set(item) == SUMMARY_KEYS, item
        pages.append([item["username"] for item in body["data"]])
        cursor = body["pagination"]["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) <= 100, "pagination does not terminate"
        params["cursor"] = cursor


async def usernames(api: Api, kind: str, of: Member, viewer: Member) -> list[str]:
    pages = await whole_list(api, kind, of, viewer, limit=100)
    assert len(pages) == 1
    return pages[0]


async def connect(api: Api, kind: str, hub: Member, other: Member) -> None:
    """Make ``other`` appear on ``hub``'s ``kind`` list."""
    if kind == "followers":
        await api.follow(other, hub)
    else:
        await api.follow(hub, other)
    await asyncio.sleep(FOLLOW_GAP_S)


async def disconnect(api: Api, kind: str, hub: Member, other: Member) -> None:
    if kind == "followers":
        await api.unfollow(other, hub)
    else:
        await api.unfollow(hub, other)
    await asyncio.sleep(FOLLOW_GAP_S)


# --- POST /users -----------------------------------------------------------------------------------------


async def test_register_returns_the_new_user(client: httpx.AsyncClient) -> None:
    response = await create_user(client, {"username": "Alice_1", "password": PASSWORD, "name": "Alice A."})
    assert response.status_code == 201, response.text
    assert_request_id(response)
    body = response.json()
    assert_user(body, username="Alice_1", name="Alice A.")
    assert body["followers_count"] == 0
    assert body["followings_count"] == 0


async def test_register_without_name(client: httpx.AsyncClient) -> None:
    response = await create_user(client, {"username": "bob", "password": PASSWORD})
    assert response.status_code == 201, response.text
    assert_user(response.json(), username="bob", name=None)


async def test_register_ignores_server_owned_fields(client: httpx.AsyncClient) -> None:
    forced_id = str(uuid.uuid4())
    response = await create_user(
        client,
        {
            "username": "mallory",
            "password": PASSWORD,
            "id": forced_id,
            "followers_count": 1000,
            "followings_count": 7,
            "created_at": "2000-01-01T00:00:00Z",
            "password_hash": "x",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert_user(body, username="mallory")
    assert body["id"] != forced_id
    assert (body["followers_count"], body["followings_count"]) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"username": "abc", "password": "x" * 8}, id="shortest-username-and-password"),
        pytest.param({"username": "a" * 30, "password": "x" * 128}, id="longest-username-and-password"),
        pytest.param({"username": "___", "password": PASSWORD}, id="underscores-only"),
        pytest.param({"username": "A_1", "password": "pässwörd"}, id="non-ascii-password-8-chars"),
        pytest.param({"username": "named", "password": PASSWORD, "name": "n" * 60}, id="name-60-chars"),
        pytest.param({"username": "sleepy", "password": PASSWORD, "name": "😴" * 60}, id="name-60-emoji"),
        pytest.param(
            {"username": "zoe", "password": PASSWORD, "name": "Zoë O'Brien-Ñúñez 张伟"}, id="name-unicode"
        ),
        pytest.param({"username": "arabic", "password": PASSWORD, "name": "سارة"}, id="name-right-to-left"),
        pytest.param(
            {"username": "joined", "password": PASSWORD, "name": "👩\u200d👩\u200d👧"}, id="name-zwj-emoji"
        ),
        pytest.param({"username": "nullname", "password": PASSWORD, "name": None}, id="name-null"),
    ],
)
async def test_register_accepts_boundary_values(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await create_user(client, body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert_user(created, username=body["username"], name=body.get("name"))
    # What was stored is what comes back (4-byte characters included, on every backend).
    login = await client.post(
        "/auth/login", json={"username": body["username"], "password": body["password"]}
    )
    assert login.status_code == 200, login.text
    fetched = await client.get(
        f"/users/{created['id']}", headers={"Authorization": f"Bearer {login.json()['token']}"}
    )
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == created


@pytest.mark.parametrize("clash", ["alice", "Alice", "ALICE", "aLiCe"])
async def test_register_taken_username_is_409_case_insensitively(
    api: Api, client: httpx.AsyncClient, clash: str
) -> None:
    original = await api.register("Alice")
    response = await create_user(client, {"username": clash, "password": "another password"})
    assert_error(response, 409, "username_taken")
    # The original account is untouched and still logs in with its own password.
    me = await client.get("/users/me", headers=original.headers)
    assert me.json()["username"] == "Alice"
    login = await client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 200, login.text
    assert login.json()["token"]


@pytest.mark.parametrize(
    "username",
    [
        pytest.param("ab", id="too-short"),
        pytest.param("", id="empty"),
        pytest.param("a" * 31, id="too-long"),
        pytest.param("a" * 1000, id="far-too-long"),
        pytest.param("jürgen", id="latin-unicode"),
        pytest.param("ユーザー名", id="cjk"),
        pytest.param("\uff11\uff12\uff13", id="fullwidth-digits"),
        pytest.param("😴😴😴", id="emoji"),
        pytest.param("has space", id="inner-space"),
        pytest.param(" alice", id="leading-space"),
        pytest.param("alice ", id="trailing-space"),
        pytest.param("alice\n", id="trailing-newline"),
        pytest.param("ali\x00ce", id="nul"),
        pytest.param("al-ice", id="hyphen"),
        pytest.param("al.ice", id="dot"),
        pytest.param("alice@example.com", id="email"),
        pytest.param("'; DROP TABLE users; --", id="sql"),
    ],
)
async def test_register_rejects_bad_usernames(client: httpx.AsyncClient, username: str) -> None:
    response = await create_user(client, {"username": username, "password": PASSWORD})
    assert_validation_error(response, "username")


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 7, id="7-chars"),
        pytest.param("ü" * 7, id="7-unicode-chars"),
        pytest.param("x" * 129, id="129-chars"),
        pytest.param("x" * 10_000, id="10000-chars"),
    ],
)
async def test_register_rejects_bad_passwords(client: httpx.AsyncClient, password: str) -> None:
    response = await create_user(client, {"username": "alice", "password": password})
    assert_validation_error(response, "password")


# Names nobody may have: too long, control characters, nothing visible, text reordered (also PATCH /users/me).
BAD_NAMES = [
    pytest.param("n" * 61, id="61-chars"),
    pytest.param("😴" * 61, id="61-emoji"),
    pytest.param("\x00", id="nul-only"),
    pytest.param("Ali\x00ce", id="inner-nul"),
    pytest.param("tab\there", id="tab"),
    pytest.param("new\nline", id="newline"),
    pytest.param("carriage\rreturn", id="carriage-return"),
    pytest.param("\x1b[31mred", id="ansi-escape"),
    pytest.param("del\x7f", id="del"),
    pytest.param("csi\x9b31m", id="c1-control-csi"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="spaces-only"),
    pytest.param("\u3000\u00a0", id="ideographic-and-no-break-spaces-only"),
    pytest.param("\u200b\u200c\u200d", id="zero-width-only"),
    pytest.param(" \u2060\ufeff ", id="word-joiner-and-bom-only"),
    pytest.param("\u202egnp.exe", id="right-to-left-override"),
    pytest.param("Ali\u202ace", id="left-to-right-embedding"),
    pytest.param("Ali\u202dce", id="left-to-right-override"),
    pytest.param("\u2066Alice\u2069", id="left-to-right-isolate"),
    pytest.param("Ali\u2068ce", id="first-strong-isolate"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_register_rejects_bad_names(client: httpx.AsyncClient, name: str) -> None:
    response = await create_user(client, {"username": "alice", "password": PASSWORD, "name": name})
    assert_validation_error(response, "name")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"username": 123, "password": PASSWORD}, "username", id="username-int"),
        pytest.param({"username": True, "password": PASSWORD}, "username", id="username-bool"),
        pytest.param({"username": None, "password": PASSWORD}, "username", id="username-null"),
        pytest.param({"username": ["alice"], "password": PASSWORD}, "username", id="username-list"),
        pytest.param({"username": {"v": "alice"}, "password": PASSWORD}, "username", id="username-object"),
        pytest.param({"username": "alice", "password": 12345678}, "password", id="password-int"),
        pytest.param({"username": "alice", "password": None}, "password", id="password-null"),
        pytest.param({"username": "alice", "password": [PASSWORD]}, "password", id="password-list"),
        pytest.param({"username": "alice", "password": PASSWORD, "name": 42}, "name", id="name-int"),
        pytest.param({"username": "alice", "password": PASSWORD, "name": False}, "name", id="name-bool"),
        pytest.param({"username": "alice", "password": PASSWORD, "name": ["a"]}, "name", id="name-list"),
        pytest.param({}, "username", id="empty-object"),
        pytest.param({"username": "alice"}, "password", id="missing-password"),
        pytest.param({"password": PASSWORD}, "username", id="missing-username"),
    ],
)
async def test_register_rejects_wrong_types_and_missing_fields(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await create_user(client, body)
    assert_validation_error(response, field)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="empty-array"),
        pytest.param([{"username": "alice", "password": PASSWORD}], id="array-of-user"),
        pytest.param("alice", id="string"),
        pytest.param(42, id="number"),
        pytest.param(None, id="null"),
    ],
)
async def test_register_rejects_a_body_that_is_not_an_object(client: httpx.AsyncClient, body: Any) -> None:
    response = await client.post(
        "/users", content=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert_validation_error(response)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"username": "alice", "password": ', id="truncated"),
        pytest.param(b"{username: alice, password: secret123}", id="unquoted"),
        pytest.param(b'{"username": "alice", "password": "secret123",}', id="trailing-comma"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
    ],
)
async def test_register_rejects_malformed_json(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post("/users", content=raw, headers={"Content-Type": "application/json"})
    assert_validation_error(response)


async def test_register_without_a_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/users")
    assert_validation_error(response)


async def test_failed_registrations_create_nobody(client: httpx.AsyncClient) -> None:
    await create_user(client, {"username": "ab", "password": PASSWORD})
    await create_user(client, {"username": "alice", "password": "short"})
    response = await create_user(client, {"username": "alice", "password": PASSWORD})
    assert response.status_code == 201, response.text


# --- GET /users/me and /users/{id} ---------------------------------------------------------------------


async def test_me_returns_the_caller(client: httpx.AsyncClient) -> None:
    created = await create_user(client, {"username": "Carol", "password": PASSWORD, "name": "Carol"})
    assert created.status_code == 201, created.text
    login = await client.post("/auth/login", json={"username": "carol", "password": PASSWORD})
    me = await client.get("/users/me", headers={"Authorization": f"Bearer {login.json()['token']}"})
    assert me.status_code == 200, me.text
    assert_request_id(me)
    assert_user(me.json(), username="Carol", name="Carol")
    assert me.json() == created.json()


async def test_me_requires_a_token(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/users/me"), 401, "unauthorized")


async def test_get_user_by_id(api: Api, client: httpx.AsyncClient) -> None:
    viewer = await api.register("viewer")
    created = await create_user(client, {"username": "Dave", "password": PASSWORD, "name": "Dave D"})
    response = await client.get(f"/users/{created.json()['id']}", headers=viewer.headers)
    assert response.status_code == 200, response.text
    assert response.json() == created.json()


async def test_get_user_by_id_accepts_own_id(api: Api, client: httpx.AsyncClient) -> None:
    alice = await api.register("alice")
    response = await client.get(f"/users/{alice.id}", headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json()["username"] == "alice"


@pytest.mark.parametrize(
    "user_id",
    [
        pytest.param(str(uuid.uuid4()), id="unknown-uuid"),
        pytest.param("00000000-0000-0000-0000-000000000000", id="nil-uuid"),
        pytest.param("abc", id="abc"),
        pytest.param("12345", id="digits"),
        pytest.param("a" * 5000, id="very-long"),
        pytest.param("0" * 65, id="65-zeros"),
        pytest.param("%00", id="nul"),
        pytest.param("' OR 1=1 --", id="sql"),
    ],
)
async def test_get_user_not_found(api: Api, client: httpx.AsyncClient, user_id: str) -> None:
    viewer = await api.register("viewer")
    response = await client.get(f"/users/{user_id}", headers=viewer.headers)
    assert_error(response, 404, "not_found")


# --- followers / followings ------------------------------------------------------------------------------


async def test_followers_newest_follow_first(api: Api) -> None:
    target = await api.register("target")
    a, b, c = [await api.register(name) for name in ("aa_first", "bb_second", "cc_third")]
    # Follow in an order that differs from registration (and id) order.
    for follower in (c, a, b):
        await api.follow(follower, target)
        await asyncio.sleep(FOLLOW_GAP_S)
    response = await list_page(api, "followers", target, a)
    assert response.status_code == 200, response.text
    assert_request_id(response)
    body = response.json()
    assert body["pagination"] == {"next_cursor": None}
    assert [item["username"] for item in body["data"]] == ["bb_second", "aa_first", "cc_third"]
    assert body["data"][0] == {"id": b.id, "username": "bb_second", "name": None}


async def test_followings_newest_follow_first(api: Api) -> None:
    fan = await api.register("fan", name="The Fan")
    x, y, z = [await api.register(name, name=name.upper()) for name in ("xxx", "yyy", "zzz")]
    for followed in (y, z, x):
        await api.follow(fan, followed)
        await asyncio.sleep(FOLLOW_GAP_S)
    response = await list_page(api, "followings", fan, x)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] == [
        {"id": x.id, "username": "xxx", "name": "XXX"},
        {"id": z.id, "username": "zzz", "name": "ZZZ"},
        {"id": y.id, "username": "yyy", "name": "YYY"},
    ]
    assert body["pagination"] == {"next_cursor": None}


@pytest.mark.parametrize("kind", KINDS)
async def test_empty_lists(api: Api, kind: str) -> None:
    loner = await api.register("loner")
    response = await list_page(api, kind, loner, loner)
    assert response.status_code == 200, response.text
    assert response.json() == {"data": [], "pagination": {"next_cursor": None}}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("count", "limit", "sizes"), [(7, 3, [3, 3, 1]), (6, 3, [3, 3]), (5, 1, [1] * 5)])
async def test_pagination_neither_repeats_nor_skips(
    api: Api, kind: str, count: int, limit: int, sizes: list[int]
) -> None:
    hub = await api.register("hub")
    others = [await api.register(f"other_{index}") for index in range(count)]
    for other in others:
        await connect(api, kind, hub, other)
    pages = await whole_list(api, kind, hub, hub, limit=limit)
    # next_cursor is null on the last page, even when the last page is full.
    assert [len(page) for page in pages] == sizes
    walked = [name for page in pages for name in page]
    assert walked == [other.username for other in reversed(others)]
    assert walked == await usernames(api, kind, hub, hub)


@pytest.mark.parametrize("kind", KINDS)
async def test_pagination_is_stable_when_follows_arrive_between_pages(api: Api, kind: str) -> None:
    hub = await api.register("hub")
    others = [await api.register(f"other_{index}") for index in range(5)]
    for other in others:
        await connect(api, kind, hub, other)
    first = await list_page(api, kind, hub, hub, limit=2)
    assert first.status_code == 200, first.text
    seen = [item["username"] for item in first.json()["data"]]
    cursor = first.json()["pagination"]["next_cursor"]
    assert cursor is not None
    # A newer follow lands before the cursor: the rest of the walk is exactly the older ones.
    await connect(api, kind, hub, await api.register("newcomer"))
    rest = await list_page(api, kind, hub, hub, limit=10, cursor=cursor)
    assert rest.status_code == 200, rest.text
    seen += [item["username"] for item in rest.json()["data"]]
    assert seen == [other.username for other in reversed(others)]
    assert rest.json()["pagination"]["next_cursor"] is None


@pytest.mark.parametrize("kind", KINDS)
async def test_refollow_moves_the_user_to_the_top(api: Api, kind: str) -> None:
    hub = await api.register("hub")
    a, b, c = [await api.register(name) for name in ("aaa", "bbb", "ccc")]
    for other in (a, b, c):
        await connect(api, kind, hub, other)
    assert await usernames(api, kind, hub, hub) == ["ccc", "bbb", "aaa"]
    await disconnect(api, kind, hub, a)
    assert await usernames(api, kind, hub, hub) == ["ccc", "bbb"]
    await connect(api, kind, hub, a)
    assert await usernames(api, kind, hub, hub) == ["aaa", "ccc", "bbb"]
    await disconnect(api, kind, hub, c)
    await connect(api, kind, hub, c)
    assert await usernames(api, kind, hub, hub) == ["ccc", "aaa", "bbb"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("limit", [1, 100])
async def test_limit_bounds_are_accepted(api: Api, kind: str, limit: int) -> None:
    hub = await api.register("hub")
    for index in range(2):
        await connect(api, kind, hub, await api.register(f"other_{index}"))
    response = await list_page(api, kind, hub, hub, limit=limit)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == min(limit, 2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("limit", ["0", "101", "-1", "1000000000000000000000", "abc", "1.5"])
async def test_limit_out_of_range_is_422(api: Api, kind: str, limit: str) -> None:
    hub = await api.register("hub")
    response = await list_page(api, kind, hub, hub, limit=limit)
    assert_validation_error(response, "limit")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("abc", id="short-garbage"),
        pytest.param("!!!!", id="not-base64"),
        pytest.param("x" * 513, id="too-long"),
        pytest.param(forged_cursor({"a": 1}), id="object"),
        pytest.param(forged_cursor([1]), id="too-few-parts"),
        pytest.param(forged_cursor([1, uuid.uuid4().hex, 3]), id="too-many-parts"),
        pytest.param(forged_cursor([1, "zz"]), id="bad-id"),
        pytest.param(forged_cursor([1, str(uuid.uuid4())]), id="dashed-id"),
        pytest.param(forged_cursor(["1", uuid.uuid4().hex]), id="string-time"),
        pytest.param(forged_cursor([True, uuid.uuid4().hex]), id="bool-time"),
        pytest.param(forged_cursor([1.5, uuid.uuid4().hex]), id="float-time"),
        pytest.param(forged_cursor([None, uuid.uuid4().hex]), id="null-time"),
        pytest.param(forged_cursor([2**62, uuid.uuid4().hex]), id="huge-time"),
        pytest.param(forged_cursor([2**61, uuid.uuid4().hex]), id="time-beyond-year-9999"),
        pytest.param(forged_cursor([-(2**61), uuid.uuid4().hex]), id="time-before-year-1"),
    ],
)
async def test_malformed_cursor_is_422(api: Api, kind: str, cursor: str) -> None:
    hub = await api.register("hub")
    response = await list_page(api, kind, hub, hub, cursor=cursor)
    assert_validation_error(response, "cursor")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("user_id", [str(uuid.uuid4()), "abc", "a" * 5000])
async def test_lists_of_unknown_user_are_404(api: Api, kind: str, user_id: str) -> None:
    viewer = await api.register("viewer")
    response = await api.client.get(f"/users/{user_id}/{kind}", headers=viewer.headers)
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("year", "expected"), [(1971, []), (2000, []), (8999, ["other"])])
async def test_well_formed_cursor_at_the_edges_of_time(
    api: Api, kind: str, year: int, expected: list[str]
) -> None:
    hub = await api.register("hub")
    await connect(api, kind, hub, await api.register("other"))
    moment = datetime(year, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    cursor = forged_cursor([moment // timedelta(microseconds=1), uuid.uuid4().hex])
    response = await list_page(api, kind, hub, hub, cursor=cursor)
    assert response.status_code == 200, response.text
    assert [item["username"] for item in response.json()["data"]] == expected


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("year", [1, 1000, 1969, 9999])
async def test_cursor_times_no_server_ever_wrote_are_422(api: Api, kind: str, year: int) -> None:
    hub = await api.register("hub")
    moment = datetime(year, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    cursor = forged_cursor([moment // timedelta(microseconds=1), uuid.uuid4().hex])
    assert_validation_error(await list_page(api, kind, hub, hub, cursor=cursor), "cursor")
