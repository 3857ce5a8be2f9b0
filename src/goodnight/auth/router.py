from __future__ import annotations

from fastapi import APIRouter

from goodnight.auth import service
from goodnight.auth.schemas import LoginRequest, LoginResponse
from goodnight.deps import ServicesDep
from goodnight.errors import error_responses

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=LoginResponse, responses=error_responses(401, 413, 429, 503))
async def login(data: LoginRequest, services: ServicesDep) -> LoginResponse:
    """Exchange a username and password for a bearer token."""
    issued = await service.login(
        services.database, services.passwords, services.tokens, data.username, data.password
    )
    return LoginResponse(token=issued.token, expires_in=issued.expires_in, message="Logged in.")
