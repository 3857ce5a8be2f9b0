"""GET /users: finding people by exact username or by the start of one, on every backend."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from goodnight.deps import Services
from goodnight.kit.clock import utcnow
from goodnight.models import User
from goodnight.users.search import upper_bound
from tests.support.api import Api, Member
from tests.support.envelope import assert_error, assert_validation_error
from tests.support.statements import explain, statements
from tests.users.test_users import forged_cursor

PERSON_KEYS = {"id", "username", "name", "followers_count", "followings_count", "followed_by_me"}
# Every character class of the alphabet in one set of names, so byte order is exercised: digits < "_" <
# letters, and case never matters.
NAMES = ["a_b", "A1c", "a9x", "abe", "Azo", "azz", "a__", "b_0", "_ab", "0ab", "zz9", "zzz"]


async def find(api: Api, who: Member, **params: Any) -> httpx.Response:
    return await api.client.get("/users", params=params, headers=who.headers)


async def found(api: Api, who: Member, **params: Any) -> dict[str, Any]:
    response = await find(api, who, **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"data", "pagination"}, body
    assert set(body["pagination"]) == {"per_page", "next_cursor"}, body
    for person in body["data"]:
        assert set(person) == PERSON_KEYS, person
    return body


async def names(api: Api, who: Member, **params: Any) -> list[str]:
    return [person["username"] for person in (await found(api, who, **params))["data"]]


async def every_page(api: Api, who: Member, q: str, per_page: int) -> list[list[str]]:
    """Every page of a prefix search, following next_cursor to the end."""
    pages: list[list[str]] = []
    params: dict[str, Any] = {"q": q, "per_page": per_page}
    while True:
        body = await found(api, who, **params)
        assert body["pagination"]["per_page"] == per_page
        pages.append([person["username"] for person in body["data"]])
        if body["pagination"]["next_cursor"] is None:
            return pages
        assert len(pages) <= 50, "paging does not end"
        params["cursor"] = body["pagination"]["next_cursor"]


async def register_all(api: Api, usernames: list[str]) -> dict[str, Member]:
    return {username: await api.register(username) for username in usernames}


def byte_order(usernames: list[str]) -> list[str]:
    return sorted(usernames, key=lambda username: username.lower().encode())


# --- the exact form -----------------------------------------------------------------------------------------


async def test_an_exact_username_finds_that_person_in_any_letter_case(api: Api) -> None:
    alice = await api.register("Alice_1", name="Alice")
    bob = await api.register("bob")
    for spelling in ("Alice_1", "alice_1", "ALICE_1"):
        body = await found(api, bob, username=spelling)
        assert body["data"] == [
            {
                "id": alice.id,
                "username": "Alice_1",
                "name": "Alice",
                "followers_count": 0,
                "followings_count": 0,
                "followed_by_me": False,
            }
        ]
        assert body["pagination"] == {"per_page": 20, "next_cursor": None}


@pytest.mark.parametrize("spelling", ["alice", "alice_12", "Alic", "ab", "a"])
async def test_an_exact_username_is_not_a_prefix(api: Api, spelling: str) -> None:
    bob = await api.register("bob")
    await api.register("alice_1")
    assert await names(api, bob, username=spelling) == []


async def test_exact_search_says_whether_you_follow_them(api: Api) -> None:
    alice, bob = await api.register("alice"), await api.register("bob")
    await api.follow(bob, alice)
    [person] = (await found(api, bob, username="alice"))["data"]
    assert person["followed_by_me"] is True
    assert person["followers_count"] == 1
    [me] = (await found(api, bob, username="bob"))["data"]
    assert me["followed_by_me"] is False
    assert me["followings_count"] == 1


# --- the prefix form ----------------------------------------------------------------------------------------


async def test_a_prefix_finds_everyone_starting_with_it_in_username_order(api: Api) -> None:
    people = await register_all(api, NAMES)
    viewer = people["zzz"]
    expected_a = byte_order([name for name in NAMES if name.lower().startswith("a")])
    assert await names(api, viewer, q="a") == expected_a
    assert await names(api, viewer, q="A") == expected_a
    # Underscores and digits bound a range correctly, not only letters (a linguistic collation fails these).
    assert await names(api, viewer, q="a_") == ["a__", "a_b"]
    assert await names(api, viewer, q="A9") == ["a9x"]
    assert await names(api, viewer, q="aZ") == ["Azo", "azz"]
    assert await names(api, viewer, q="_") == ["_ab"]
    assert await names(api, viewer, q="0") == ["0ab"]
    # The top of the alphabet: "z" has no successor letter, its bound is "{".
    assert await names(api, viewer, q="z") == ["zz9", "zzz"]
    assert await names(api, viewer, q="zzz") == ["zzz"]
    assert await names(api, viewer, q="zzzz") == []
    assert await names(api, viewer, q="c") == []


async def test_prefix_pages_cover_every_match_once(api: Api) -> None:
    people = await register_all(api, NAMES)
    everyone = byte_order(NAMES)
    for per_page in (1, 2, 5, 100):
        for q, matching in (("a", [n for n in everyone if n.lower().startswith("a")]), ("z", ["zz9", "zzz"])):
            pages = await every_page(api, people["abe"], q, per_page)
            assert [name for page in pages for name in page] == matching
            assert all(len(page) == per_page for page in pages[:-1])
            assert 0 < len(pages[-1]) <= per_page


async def test_the_default_page_has_twenty_people(api: Api) -> None:
    people = await register_all(api, [f"sleeper{index:02d}" for index in range(21)])
    body = await found(api, people["sleeper00"], q="sleeper")
    assert len(body["data"]) == 20
    assert body["pagination"]["per_page"] == 20
    rest = await found(api, people["sleeper00"], q="sleeper", cursor=body["pagination"]["next_cursor"])
    assert [person["username"] for person in rest["data"]] == ["sleeper20"]
    assert rest["pagination"]["next_cursor"] is None


async def test_a_cursor_survives_the_people_behind_it_changing(api: Api) -> None:
    people = await register_all(api, ["kate", "kim", "kurt"])
    first = await found(api, people["kate"], q="k", per_page=2)
    assert [person["username"] for person in first["data"]] == ["kate", "kim"]
    await api.register("ken")  # lands on the page already read: not repeated, not shifting the next one
    await api.register("kyle")
    rest = await found(api, people["kate"], q="k", per_page=2, cursor=first["pagination"]["next_cursor"])
    assert [person["username"] for person in rest["data"]] == ["kurt", "kyle"]


async def test_each_person_says_whether_you_follow_them(api: Api) -> None:
    people = await register_all(api, ["sam", "sara", "sean", "sid", "sue"])
    viewer = people["sam"]
    await api.follow(viewer, people["sara"])
    await api.follow(viewer, people["sid"])
    await api.follow(people["sue"], people["sara"])  # someone else's follow says nothing about the viewer
    await api.follow(viewer, people["sue"])
    await api.unfollow(viewer, people["sue"])  # an unfollowed row is still in the table, inactive
    body = await found(api, viewer, q="s")
    assert {person["username"]: person["followed_by_me"] for person in body["data"]} == {
        "sam": False,
        "sara": True,
        "sean": False,
        "sid": True,
        "sue": False,
    }
    sara = next(person for person in body["data"] if person["username"] == "sara")
    assert (sara["followers_count"], sara["followings_count"]) == (2, 0)


async def test_a_page_is_one_query_however_many_people_it_holds(api: Api, services: Services) -> None:
    people = await register_all(api, [f"pat{index:02d}" for index in range(12)])
    viewer = people["pat00"]
    for index in range(1, 12, 2):
        await api.follow(viewer, people[f"pat{index:02d}"])
    for params in ({"q": "pat"}, {"q": "pat", "per_page": 5}, {"username": "pat03"}):
        await find(api, viewer, **params)  # a warm token and connection, as in steady use
        with statements(services.database.engine) as sent:
            response = await find(api, viewer, **params)
        assert response.status_code == 200, response.text
        assert len(sent) == 1, [statement.sql for statement in sent]


# --- errors -------------------------------------------------------------------------------------------------

BAD_QUERIES: dict[str, tuple[dict[str, Any], str]] = {
    "neither": ({}, "query"),
    "both": ({"q": "al", "username": "alice"}, "query"),
    "empty-prefix": ({"q": ""}, "q"),
    "long-prefix": ({"q": "a" * 31}, "q"),
    "dash": ({"q": "al-"}, "q"),
    "space": ({"q": "al ice"}, "q"),
    "percent": ({"q": "a%"}, "q"),
    "accent": ({"q": "é"}, "q"),
    "nul": ({"q": "a\x00"}, "q"),
    "empty-username": ({"username": ""}, "username"),
    "long-username": ({"username": "a" * 31}, "username"),
    "username-wildcard": ({"username": "ali_%"}, "username"),
    "per-page-zero": ({"q": "a", "per_page": 0}, "per_page"),
    "per-page-101": ({"q": "a", "per_page": 101}, "per_page"),
    "per-page-text": ({"q": "a", "per_page": "ten"}, "per_page"),
    "cursor-on-exact": ({"username": "alice", "cursor": forged_cursor(["alice"])}, "query"),
    "long-cursor": ({"q": "a", "cursor": "A" * 513}, "cursor"),
}


@pytest.mark.parametrize(("params", "field"), BAD_QUERIES.values(), ids=BAD_QUERIES.keys())
async def test_bad_queries_are_422(api: Api, params: dict[str, Any], field: str) -> None:
    alice = await api.register("alice")
    assert_validation_error(await find(api, alice, **params), field)


MALFORMED_CURSORS = {
    "garbage": "not a cursor!",
    "not-json": forged_cursor("x")[:-2] + "!!",
    "a-number": forged_cursor([42]),
    "two-parts": forged_cursor(["alice", "bob"]),
    "upper-case": forged_cursor(["Alice"]),
    "odd-characters": forged_cursor(["a' OR 1=1 --"]),
    "nul": forged_cursor(["a\x00"]),
    "too-long": forged_cursor(["a" * 31]),
    "empty": forged_cursor([""]),
}


@pytest.mark.parametrize("cursor", MALFORMED_CURSORS.values(), ids=MALFORMED_CURSORS.keys())
async def test_malformed_cursors_are_422(api: Api, cursor: str) -> None:
    alice = await api.register("alice")
    assert_validation_error(await find(api, alice, q="a", cursor=cursor), "cursor")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}], ids=["none", "garbage"])
async def test_a_token_is_required_even_for_a_bad_query(api: Api, headers: dict[str, str]) -> None:
    await api.register("alice")
    for params in ({"q": "al"}, {"username": "alice"}, {}, {"q": "no good"}):
        assert_error(await api.client.get("/users", params=params, headers=headers), 401, "unauthorized")


# --- served by the index ------------------------------------------------------------------------------------

# Enough rows that a sequential scan costs far more than a range seek, so the plan PostgreSQL picks on its
# own (no enable_seqscan tricks) is the one production gets.
PLAN_ROWS = 20_000


async def _fill_users(services: Services, count: int) -> None:
    now = utcnow()
    rows = [
        {
            "id": uuid.uuid4(),
            "username": f"Bulk{index:06d}",
            "username_key": f"bulk{index:06d}",
            "name": None,
            "password_hash": "x",
            "followers_count": 0,
            "followings_count": 0,
            "last_active_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for index in range(count)
    ]
    engine = services.database.engine
    async with engine.begin() as connection:
        await connection.execute(sa.insert(User), rows)
    analyze = {"postgresql": "ANALYZE users", "sqlite": "ANALYZE", "mysql": "ANALYZE TABLE users"}
    async with engine.connect() as connection:
        await connection.exec_driver_sql(analyze[engine.dialect.name])
        await connection.commit()


async def test_a_prefix_page_is_a_range_seek_on_the_username_index(api: Api, services: Services) -> None:
    viewer = await api.register("viewer")
    await _fill_users(services, PLAN_ROWS)
    engine = services.database.engine
    with statements(engine) as sent:
        page = await found(api, viewer, q="BULK0123", per_page=20)
    assert [person["username"] for person in page["data"]] == [
        f"Bulk{index:06d}" for index in range(12300, 12320)
    ]
    [search] = sent
    plan = await explain(engine, search)
    backend = engine.dialect.name
    if backend == "postgresql":
        lines = [row["QUERY PLAN"].strip().removeprefix("->  ") for row in plan]
        text = "\n".join(lines)
        # Both bounds are the index condition (a range seek), not a filter applied to rows read.
        seek = lines.index(next(line for line in lines if "using uq_users_username_key on users" in line))
        assert lines[seek].startswith(("Index Scan", "Index Only Scan")), text
        assert lines[seek + 1].startswith("Index Cond:"), text
        assert "username_key)::text >= " in lines[seek + 1], text
        assert "username_key)::text < " in lines[seek + 1], text
        assert "Seq Scan on users" not in text, text
    elif backend == "sqlite":
        details = [row["detail"] for row in plan]
        assert any(
            "users USING INDEX" in detail and "(username_key>? AND username_key<?)" in detail
            for detail in details
        ), details
    else:
        [users] = [row for row in plan if row["table"] == "users"]
        assert (users["type"], users["key"]) == ("range", "uq_users_username_key"), plan


def test_the_upper_bound_is_the_prefix_with_its_last_character_incremented() -> None:
    assert upper_bound("ab") == "ac"
    assert upper_bound("a9") == "a:"
    assert upper_bound("a_") == "a`"
    assert upper_bound("z") == "{"
    # Every key starting with the prefix sorts inside [prefix, bound) in byte order, and no other key does.
    alphabet = "0123456789_abcdefghijklmnopqrstuvwxyz"
    keys = [a + b for a in alphabet for b in alphabet] + list(alphabet)
    for prefix in ("a", "a_", "a9", "az", "z", "_", "9"):
        inside = {key for key in keys if prefix <= key < upper_bound(prefix)}
        assert inside == {key for key in keys if key.startswith(prefix)}, prefix


async def test_the_username_key_is_byte_ordered_on_every_backend(services: Services) -> None:
    engine = services.database.engine
    collation_of_the_key = {
        "sqlite": "SELECT info.coll FROM pragma_index_list('users') AS idx, "
        "pragma_index_xinfo(idx.name) AS info WHERE info.name = 'username_key'",
        "postgresql": "SELECT collation_name FROM information_schema.columns "
        "WHERE table_name = 'users' AND column_name = 'username_key'",
        "mysql": "SELECT collation_name FROM information_schema.columns "
        "WHERE table_schema = DATABASE() AND table_name = 'users' AND column_name = 'username_key'",
    }
    async with engine.connect() as connection:
        collation = (await connection.exec_driver_sql(collation_of_the_key[engine.dialect.name])).scalar()
    assert collation == {"sqlite": "BINARY", "postgresql": "C", "mysql": "utf8mb4_bin"}[engine.dialect.name]


# --- the Redis-backed deployment ----------------------------------------------------------------------------


async def test_search_works_the_same_with_redis_timelines(timeline_api: Api) -> None:
    people = await register_all(timeline_api, ["nia", "nick", "noor"])
    await timeline_api.follow(people["nia"], people["noor"])
    body = await found(timeline_api, people["nia"], q="n", per_page=2)
    assert [(person["username"], person["followed_by_me"]) for person in body["data"]] == [
        ("nia", False),
        ("nick", False),
    ]
    rest = await found(timeline_api, people["nia"], q="n", cursor=body["pagination"]["next_cursor"])
    assert [(person["username"], person["followed_by_me"]) for person in rest["data"]] == [("noor", True)]
