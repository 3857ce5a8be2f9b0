from __future__ import annotations

from fastapi import APIRouter, status

from goodnight.deps import AUTHENTICATED, CurrentUserId, ServicesDep, SessionDep, WriteSessionDep
from goodnight.errors import error_responses
from goodnight.models import User
from goodnight.users import service
from goodnight.users.schemas import UserCreate, UserOut

public_router = APIRouter(prefix="/users", tags=["users"])
router = APIRouter(prefix="/users", tags=["users"], dependencies=AUTHENTICATED)


@public_router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=UserOut, responses=error_responses(409, 413)
)
async def register(data: UserCreate, session: WriteSessionDep, services: ServicesDep) -> User:
    """Create an account. Usernames are unique regardless of letter case."""
    return await service.register(session, services.passwords, data)


@router.get("/me", response_model=UserOut, responses=error_responses(401))
async def me(session: SessionDep, user_id: CurrentUserId) -> User:
    return await service.get_me(session, user_id)


@router.get("/{user_id}", response_model=UserOut, responses=error_responses(401, 404))
async def get_user(user_id: str, session: SessionDep) -> User:
    return await service.get_user(session, user_id)
