from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from goodnight.auth import service
from goodnight.auth.schemas import LoginRequest, LoginResponse
from goodnight.deps import CurrentToken, WriteSessionDep, services_of
from goodnight.errors import error_responses

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=LoginResponse, responses=error_responses(401, 413, 429, 503))
async def login(data: LoginRequest, request: Request) -> LoginResponse:
    """Exchange a username and password for a bearer token."""
    services = services_of(request)
    issued = await service.login(
        services.database,
        services.passwords,
        services.tokens,
        services.rate_limiter,
        data.username,
        data.password,
    )
    return LoginResponse(token=issued.token, expires_in=issued.expires_in, message="Login successful")


@router.post(
    "/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=error_responses(401)
)
async def logout(token: CurrentToken, session: WriteSessionDep, request: Request) -> Response:
    """Revoke the token this request carries: every server refuses it (401) within a second."""
    services_of(request).revocations.revoke_token(session, token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
