from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from pydantic import TypeAdapter

from goodnight.db import Reads
from goodnight.deps import AUTHENTICATED, CurrentUserId, SessionDep, WriteSessionDep, services_of, signed_in
from goodnight.errors import error_responses
from goodnight.kit.fast_lane import DECLINED, FastLane, LaneHandler, plain_int, plain_text
from goodnight.kit.schema import (
    DEFAULT_LIMIT,
    MAX_CURSOR_LENGTH,
    MAX_LIMIT,
    Cursor,
    Limit,
    Message,
    Page,
    PageFields,
)
from goodnight.socials import service
from goodnight.users.schemas import UserSummary, UserSummaryFields

router = APIRouter(tags=["socials"], dependencies=AUTHENTICATED)


@router.post(
    "/socials/follow/{user_id}",
    status_code=status.HTTP_201_CREATED,
    response_model=Message,
    responses=error_responses(400, 401, 404, 422),
)
async def follow(user_id: str, session: WriteSessionDep, request: Request, me: CurrentUserId) -> Message:
    await service.follow(session, services_of(request).events, me, user_id)
    return Message(message="Successfully followed user")


@router.post("/socials/unfollow/{user_id}", response_model=Message, responses=error_responses(401, 404, 422))
async def unfollow(user_id: str, session: WriteSessionDep, request: Request, me: CurrentUserId) -> Message:
    await service.unfollow(session, services_of(request).events, me, user_id)
    return Message(message="Successfully unfollowed user")


@router.get(
    "/users/{user_id}/followers", response_model=Page[UserSummary], responses=error_responses(401, 404)
)
async def followers(
    user_id: str, session: SessionDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """People who follow this user, most recent follow first."""
    return await _page(session, user_id, followers=True, limit=limit, cursor=cursor)


@router.get(
    "/users/{user_id}/followings", response_model=Page[UserSummary], responses=error_responses(401, 404)
)
async def followings(
    user_id: str, session: SessionDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """People this user follows, most recent follow first."""
    return await _page(session, user_id, followers=False, limit=limit, cursor=cursor)


def _lane(*, followers: bool) -> LaneHandler:
    """The fast lane (``kit.fast_lane``) of the followers or the followings page."""

    async def lane(request: Request) -> Response | None:
        reader = signed_in(request)
        if reader is None:
            return None
        limit = plain_int(request.query_params, "limit", MAX_LIMIT, lowest=1)
        cursor = plain_text(request.query_params, "cursor", MAX_CURSOR_LENGTH)
        if limit is DECLINED or cursor is DECLINED:
            return None
        user_id = request.path_params["user_id"]
        async with services_of(request).database.read_connection(reader) as connection:
            return await _page(
                connection, user_id, followers=followers, limit=limit or DEFAULT_LIMIT, cursor=cursor
            )

    return lane


FAST_LANES = [
    FastLane("/users/{user_id}/followers", _lane(followers=True)),
    FastLane("/users/{user_id}/followings", _lane(followers=False)),
]
# The declared ``Page[UserSummary]``, rendered by the same serializer from plain dicts: the rows come from our
# own database, and building and validating a model per person cost about as much as the query itself.
_PAGE = TypeAdapter(PageFields[UserSummaryFields])


async def _page(reads: Reads, user_id: str, *, followers: bool, limit: int, cursor: str | None) -> Response:
    people, next_cursor = await service.connections(
        reads, user_id, followers=followers, limit=limit, cursor=cursor
    )
    page: PageFields[UserSummaryFields] = {
        "data": [{"id": id_, "username": username, "name": name} for id_, username, name, _ in people],
        "pagination": {"next_cursor": next_cursor},
    }
    return Response(_PAGE.dump_json(page), media_type="application/json")
