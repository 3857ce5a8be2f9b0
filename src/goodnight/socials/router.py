from __future__ import annotations

from fastapi import APIRouter, Request, status

from goodnight.deps import AUTHENTICATED, CurrentUserId, SessionDep, WriteSessionDep, services_of
from goodnight.errors import error_responses
from goodnight.kit.schema import DEFAULT_LIMIT, Cursor, Limit, Message, Page, Pagination
from goodnight.socials import service
from goodnight.users.schemas import UserSummary

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
) -> Page[UserSummary]:
    """People who follow this user, most recent follow first."""
    return await _page(session, user_id, followers=True, limit=limit, cursor=cursor)


@router.get(
    "/users/{user_id}/followings", response_model=Page[UserSummary], responses=error_responses(401, 404)
)
async def followings(
    user_id: str, session: SessionDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[UserSummary]:
    """People this user follows, most recent follow first."""
    return await _page(session, user_id, followers=False, limit=limit, cursor=cursor)


async def _page(
    session: SessionDep, user_id: str, *, followers: bool, limit: int, cursor: str | None
) -> Page[UserSummary]:
    users, next_cursor = await service.connections(
        session, user_id, followers=followers, limit=limit, cursor=cursor
    )
    return Page(
        data=[UserSummary.model_validate(user) for user in users],
        pagination=Pagination(next_cursor=next_cursor),
    )
