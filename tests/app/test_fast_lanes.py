"""The fast lanes answer exactly what the routes they stand in for answer, and leave the rest to them."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, get_type_hints

import httpx
import pytest
import pytest_asyncio
import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import TypeAdapter
from starlette.datastructures import QueryParams

from goodnight.deps import Services
from goodnight.kit.clock import utcnow
from goodnight.kit.cursor import encode_cursor
from goodnight.kit.fast_lane import DECLINED, FastLanes, plain_int, plain_text
from goodnight.kit.schema import Page, PageFields, Pagination, PaginationFields
from goodnight.models import Follow, User
from goodnight.users.schemas import UserSummary, UserSummaryFields
from tests.support.api import Api, Member
from tests.support.apps import client_for
from tests.support.envelope import assert_error
from tests.support.times import iso

FEED = "/sleep_records/followings"
SOMEONE = "{someone}"
FOLLOWERS = f"/users/{SOMEONE}/followers"


def lanes_of(app: FastAPI) -> FastLanes:
    lanes = app.router.middleware_stack
    assert isinstance(lanes, FastLanes)
    return lanes


@contextmanager
def declared_routes_only(app: FastAPI) -> Iterator[None]:
    """The app as it was before the lanes: every request goes to its declared route."""
    lanes = lanes_of(app)
    app.router.middleware_stack = lanes.app
    try:
        yield
    finally:
        app.router.middleware_stack = lanes


@pytest_asyncio.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


async def reader_with_a_feed(api: Api) -> tuple[Member, Member]:
    reader, author = await api.register(name="Reader"), await api.register(name="Ana Ümlaut")
    await api.follow(reader, author)
    now = utcnow()
    for days, hours in ((3, 7.5), (2, 8.25), (1, 6.0)):
        start = now - timedelta(days=days)
        await api.sleep(author, iso(start), iso(start + timedelta(hours=hours)))
    return reader, author


def without_cursor(response: httpx.Response) -> bytes:
    """The body, but for a feed cursor's window start, which moves with the clock between two requests."""
    return re.sub(rb'"next_cursor":"[^"]+"', b'"next_cursor":"..."', response.content)


def without_request_id(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    body["error"].pop("request_id")
    return body


async def both_ways(
    app: FastAPI, client: httpx.AsyncClient, path: str, member: Member | None
) -> httpx.Response:
    """``GET path`` through the lanes and through the declared routes: the same status, body and type."""
    headers = member.headers if member is not None else {}
    fast = await client.get(path, headers=headers)
    with declared_routes_only(app):
        declared = await client.get(path, headers=headers)
    assert fast.status_code == declared.status_code, path
    if fast.status_code < 400:
        assert without_cursor(fast) == without_cursor(declared), path
    else:  # each error names its own request
        assert without_request_id(fast) == without_request_id(declared), path
    assert fast.headers["content-type"] == declared.headers["content-type"]
    return fast


async def test_the_lanes_answer_byte_for_byte_what_the_routes_answer(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    api = Api(client)
    reader, author = await reader_with_a_feed(api)
    served = lanes_of(app).served.copy()
    paths = [
        "/users/me",
        f"/users/{author.id}",
        f"/users/{reader.id}",
        FEED,
        f"{FEED}?per_page=2",
        f"{FEED}?per_page=100&start_index=0",
        f"{FEED}?start_index=1&per_page=1",
        f"{FEED}?start_index=1000000",
        f"/users/{author.id}/followers",
        f"/users/{author.id}/followers?limit=1",
        f"/users/{reader.id}/followings?limit=100",
        f"/users/{author.id}/followings",
    ]
    for path in paths:
        assert (await both_ways(app, client, path, reader)).status_code == 200, path
    first = (await client.get(f"{FEED}?per_page=1", headers=reader.headers)).json()
    cursor = first["pagination"]["next_cursor"]
    await both_ways(app, client, f"{FEED}?per_page=1&cursor={cursor}", reader)
    fan = await api.register()
    await api.follow(fan, author)
    first = (await client.get(f"/users/{author.id}/followers?limit=1", headers=reader.headers)).json()
    cursor = first["pagination"]["next_cursor"]
    second = await both_ways(app, client, f"/users/{author.id}/followers?limit=1&cursor={cursor}", reader)
    assert [person["id"] for person in second.json()["data"]] == [reader.id]
    assert sum((lanes_of(app).served - served).values()) == len(paths) + 4


# Names no client can set (the API refuses control characters), but a database may hold: what a page renders
# must not depend on what the API happens to let in.
AWKWARD_NAMES = [
    'say "hi"',
    "back\\slash \\u0041",
    "tab\tnew\nline\rcarriage \x01\x08\x0c\x1f del\x7f c1\x85 sep\u2028\u2029",
    "Zoë Ångström — 日本語",
    "sleepy 😴🛌🏽 👩‍👩‍👧",
    "</script><b>&amp;'",
    None,
]


async def test_followers_pages_render_as_the_declared_model_would(
    app: FastAPI, client: httpx.AsyncClient, services: Services
) -> None:
    """Byte for byte what ``Page[UserSummary]`` renders, though the pages are built without its models."""
    api = Api(client)
    reader = await api.register()
    fans = [await api.register() for _ in AWKWARD_NAMES]
    for fan in fans:
        await api.follow(fan, reader)
    async with services.database.writer() as session:
        for fan, name in zip(fans, AWKWARD_NAMES, strict=True):
            await session.execute(sa.update(User).where(User.id == uuid.UUID(fan.id)).values(name=name))
        followed = sa.select(Follow.follower_id, Follow.followed_at).where(
            Follow.followed_id == uuid.UUID(reader.id)
        )
        followed_at = dict((await session.execute(followed)).all())
        await session.commit()
    newest_first = [
        UserSummary(id=uuid.UUID(fan.id), username=fan.username, name=name)
        for fan, name in reversed(list(zip(fans, AWKWARD_NAMES, strict=True)))
    ]
    declared = TypeAdapter(Page[UserSummary])
    whole = await both_ways(app, client, f"/users/{reader.id}/followers?limit=100", reader)
    assert whole.content == declared.dump_json(
        Page(data=newest_first, pagination=Pagination(next_cursor=None))
    )
    half = len(newest_first) // 2
    last = newest_first[half - 1]
    cursor = encode_cursor(followed_at[last.id], last.id)
    first = await both_ways(app, client, f"/users/{reader.id}/followers?limit={half}", reader)
    assert first.content == declared.dump_json(
        Page(data=newest_first[:half], pagination=Pagination(next_cursor=cursor))
    )
    rest = await both_ways(app, client, f"/users/{reader.id}/followers?limit=100&cursor={cursor}", reader)
    assert rest.json()["data"] == [person.model_dump(mode="json") for person in newest_first[half:]]
    for fan in fans[:2]:
        followings = await both_ways(app, client, f"/users/{fan.id}/followings", reader)
        assert followings.json()["data"] == [{"id": reader.id, "username": reader.username, "name": None}]


def test_the_plain_dict_pages_have_the_models_fields() -> None:
    for fields, model in ((UserSummaryFields, UserSummary), (PaginationFields, Pagination)):
        # The same names in the same order (the order of a rendering's keys), of the same types.
        assert list(get_type_hints(fields).items()) == [
            (name, field.annotation) for name, field in model.model_fields.items()
        ]
    assert list(get_type_hints(PageFields)) == list(Page.model_fields)


async def test_errors_raised_in_a_lane_are_the_routes_errors(app: FastAPI, client: httpx.AsyncClient) -> None:
    api = Api(client)
    reader = await api.register()
    served = lanes_of(app).served.copy()
    for path, status, code in [
        ("/users/0194f0f0-0000-7000-8000-000000000000", 404, "not_found"),
        ("/users/not-an-id", 404, "not_found"),
        (f"{FEED}?cursor=not-a-cursor", 422, "validation_error"),
        ("/users/0194f0f0-0000-7000-8000-000000000000/followers", 404, "not_found"),
        ("/users/not-an-id/followings", 404, "not_found"),
        (f"/users/{reader.id}/followers?cursor=not-a-cursor", 422, "validation_error"),
    ]:
        assert_error(await both_ways(app, client, path, reader), status, code)
    # Nobody on the page, yet the user exists: an empty page, not a 404.
    empty = await both_ways(app, client, f"/users/{reader.id}/followers", reader)
    assert empty.json() == {"data": [], "pagination": {"next_cursor": None}}
    assert sum((lanes_of(app).served - served).values()) == 7


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        (f"{FEED}?per_page=0", 422, "validation_error"),
        (f"{FEED}?per_page=101", 422, "validation_error"),
        (f"{FEED}?per_page=-1", 422, "validation_error"),
        (f"{FEED}?per_page=%2B5", 200, ""),  # "+5": pydantic's to judge
        (f"{FEED}?per_page=%205", 200, ""),
        (f"{FEED}?per_page=", 422, "validation_error"),
        (f"{FEED}?per_page=abc", 422, "validation_error"),
        (f"{FEED}?per_page=%D9%A3", 422, "validation_error"),  # an Arabic-Indic three
        (f"{FEED}?per_page=99999999999999999999", 422, "validation_error"),
        (f"{FEED}?per_page=2&per_page=3", 200, ""),
        (f"{FEED}?start_index=1000001", 422, "validation_error"),
        (f"{FEED}?cursor=", 422, "validation_error"),
        (f"{FEED}?cursor={'x' * 513}", 422, "validation_error"),
        (f"{FOLLOWERS}?limit=0", 422, "validation_error"),
        (f"{FOLLOWERS}?limit=101", 422, "validation_error"),
        (f"{FOLLOWERS}?limit=1.0", 200, ""),  # pydantic takes it; the lane leaves it to pydantic
        (f"{FOLLOWERS}?limit=1&limit=2", 200, ""),
        (f"{FOLLOWERS}?cursor=", 422, "validation_error"),
    ],
)
async def test_parameters_out_of_the_ordinary_go_to_the_declared_route(
    app: FastAPI, client: httpx.AsyncClient, path: str, status: int, code: str
) -> None:
    reader = await Api(client).register()
    served = lanes_of(app).served.copy()
    response = await both_ways(app, client, path.replace(SOMEONE, reader.id), reader)
    if code:
        assert_error(response, status, code)
    else:
        assert response.status_code == status, response.text
    assert lanes_of(app).served == served, "a lane answered a request it should have left to the route"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
)
async def test_a_request_without_a_valid_token_gets_the_routes_401(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    served = lanes_of(app).served.copy()
    for path in (
        "/users/me",
        "/users/someone",
        FEED,
        "/users/someone/followers",
        "/users/someone/followings",
    ):
        fast = await client.get(path, headers=headers)
        assert_error(fast, 401, "unauthorized")
        with declared_routes_only(app):
            declared = await client.get(path, headers=headers)
        assert without_request_id(fast) == without_request_id(declared)
    assert lanes_of(app).served == served


async def test_other_methods_and_neighbouring_paths_are_not_the_lanes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    api = Api(client)
    reader = await api.register()
    served = lanes_of(app).served.copy()
    assert (await client.get(f"/users/{reader.id}/sleep_summary", headers=reader.headers)).status_code == 200
    assert (await client.get(f"/users/{reader.id}/followers/x", headers=reader.headers)).status_code == 404
    assert (await client.head("/users/me", headers=reader.headers)).status_code in (200, 405)
    assert (await client.get("/users/me/", headers=reader.headers)).status_code in (307, 404)
    assert lanes_of(app).served == served


def test_plain_parameters() -> None:
    query = QueryParams("a=7&b=007&c=%2B7&d=&e=7&e=8&f=12345&g=x&h=")
    assert plain_int(query, "a", 100) == 7
    assert plain_int(query, "b", 100) == 7
    assert plain_int(query, "missing", 100) is None
    for name in ("c", "d", "e", "f", "g"):
        assert plain_int(query, name, 100) is DECLINED, name
    assert plain_int(query, "a", 100, lowest=8) is DECLINED
    assert plain_text(query, "g", 1) == "x"
    assert plain_text(query, "g", 0) is DECLINED
    assert plain_text(query, "h", 10) is DECLINED
    assert plain_text(query, "e", 10) is DECLINED
    assert plain_text(query, "missing", 10) is None
