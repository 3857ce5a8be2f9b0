from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import TypeAdapter

from goodnight.db import Reads
from goodnight.deps import (
    AUTHENTICATED,
    CurrentUserId,
    SessionDep,
    WriteSessionDep,
    services_of,
    signed_in,
)
from goodnight.errors import error_responses
from goodnight.kit.fast_lane import FastLane
from goodnight.kit.ids import parse_id
from goodnight.kit.schema import DEFAULT_LIMIT, Cursor
from goodnight.models import User
from goodnight.models.user import USERNAME_PREFIX_PATTERN
from goodnight.users import deletion, password, search, service
from goodnight.users.repository import ProfileRow
from goodnight.users.schemas import (
    AccountDeletion,
    PasswordChange,
    PeoplePage,
    ProfileUpdate,
    UserCreate,
    UserOut,
)

public_router = APIRouter(prefix="/users", tags=["users"])
router = APIRouter(prefix="/users", tags=["users"], dependencies=AUTHENTICATED)

# Both forms take only what a username could contain (a 422 otherwise), so nothing odd reaches the database.
ExactName = Annotated[
    str | None, Query(pattern=USERNAME_PREFIX_PATTERN, description="An exact username, in any letter case.")
]
NamePrefix = Annotated[
    str | None,
    Query(
        pattern=USERNAME_PREFIX_PATTERN, description="The start of usernames (1-30 characters), in any case."
    ),
]


@public_router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=UserOut, responses=error_responses(409, 413)
)
async def register(data: UserCreate, session: WriteSessionDep, request: Request) -> User:
    """Create an account. Usernames are unique regardless of letter case."""
    return await service.register(session, services_of(request).passwords, data)


@router.get("", response_model=PeoplePage, responses=error_responses(401))
async def find_people(
    session: SessionDep,
    me: CurrentUserId,
    username: ExactName = None,
    q: NamePrefix = None,
    per_page: Annotated[int, Query(ge=1, le=100, description="People per page, 1..100.")] = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> PeoplePage:
    """Find people to follow: `username` finds that one person (or nobody); `q` pages through everyone
    whose username starts with it, in username order. Each says whether you already follow them."""
    return await search.find_people(
        session, me, username=username, prefix=q, per_page=per_page, cursor=cursor
    )


@router.get("/me", response_model=UserOut, responses=error_responses(401))
async def me(session: SessionDep, user_id: CurrentUserId) -> Response:
    return _profile(await service.get_me(session, user_id))


async def me_fast(request: Request) -> Response | None:
    """``GET /me``'s fast lane (``kit.fast_lane``)."""
    user_id = signed_in(request)
    if user_id is None:
        return None
    return await _profile_served(request, user_id, user_id, lambda reads: service.get_me(reads, user_id))


@router.patch("/me", response_model=UserOut, responses=error_responses(401, 413))
async def update_me(
    data: ProfileUpdate, session: WriteSessionDep, request: Request, user_id: CurrentUserId
) -> User:
    """Change your name (`null` clears it). Your followers' feeds show the new one from their next page."""
    return await service.rename(session, services_of(request).events, user_id, data.name)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 409, 413),
)
async def delete_me(
    data: AccountDeletion, session: WriteSessionDep, request: Request, user_id: CurrentUserId
) -> Response:
    """Delete your account, confirmed with your password: you, your sleep records and your follows both
    ways. Your records leave your followers' feeds at once, your tokens are refused by every server within a
    second, and your username is free for anyone to register."""
    services = services_of(request)
    await deletion.delete_account(
        services.database,
        session,
        services.passwords,
        services.revocations,
        services.events,
        user_id,
        password=data.password,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 409),
)
async def change_password(
    data: PasswordChange, session: WriteSessionDep, request: Request, user_id: CurrentUserId
) -> Response:
    """Change your password. Every token issued before the change, this request's included, is refused
    by every server within a second; log in again with the new password."""
    services = services_of(request)
    await password.change_password(
        services.database,
        session,
        services.passwords,
        services.revocations,
        user_id,
        current=data.current_password,
        new=data.new_password,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{user_id}", response_model=UserOut, responses=error_responses(401, 404))
async def get_user(user_id: str, session: SessionDep) -> Response:
    return _profile(await service.get_user(session, user_id))


async def get_user_fast(request: Request) -> Response | None:
    """``GET /{user_id}``'s fast lane."""
    reader = signed_in(request)
    if reader is None:
        return None
    raw_id = request.path_params["user_id"]
    return await _profile_served(
        request, reader, parse_id(raw_id), lambda reads: service.get_user(reads, raw_id)
    )


async def _profile_served(
    request: Request,
    reader: uuid.UUID,
    owner: uuid.UUID | None,
    read: Callable[[Reads], Awaitable[ProfileRow]],
) -> Response:
    """``owner``'s profile for ``reader``: kept in memory while no write has changed it
    (``users.profiles``), where the process can tell."""
    services = services_of(request)

    async def load() -> bytes:
        async with services.database.read_connection(reader) as connection:
            return _profile_json(await read(connection))

    cached = services.profiles
    body = await (cached.body(owner, load) if cached is not None and owner is not None else load())
    return Response(body, media_type="application/json")


FAST_LANES = [FastLane("/users/me", me_fast), FastLane("/users/{user_id}", get_user_fast)]
_USER_OUT = TypeAdapter(UserOut)


def _profile_json(user: ProfileRow) -> bytes:
    """What FastAPI makes of ``user`` as the declared ``UserOut``, made once, by the same serializer."""
    return _USER_OUT.dump_json(UserOut.model_validate(user))


def _profile(user: ProfileRow) -> Response:
    return Response(_profile_json(user), media_type="application/json")
