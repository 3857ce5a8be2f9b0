from __future__ import annotations

import re

from fastapi import APIRouter

from goodnight.auth.schemas import LoginRequest, LoginResponse
from goodnight.deps import ServicesDep, SessionDep
from goodnight.errors import Unauthorized, error_responses
from goodnight.users import repository as users
from goodnight.users.schemas import USERNAME_PATTERN

USERNAME_RE = re.compile(USERNAME_PATTERN.strip("^$"))

router = APIRouter(prefix="/auth", tags=["auth"])


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    default_message = "Unknown username or wrong password."


@router.post("/login", response_model=LoginResponse, responses=error_responses(401, 413))
async def login(data: LoginRequest, session: SessionDep, services: ServicesDep) -> LoginResponse:
    """Exchange a username and password for a bearer token."""
    # Only names that could have been registered reach the database: no NULs or odd collation matches.
    well_formed = USERNAME_RE.fullmatch(data.username) is not None
    user = await users.get_by_username(session, data.username) if well_formed else None
    # Always run one Argon2 verification, so an unknown user takes as long as a wrong password.
    valid = await services.passwords.verify(user.password_hash if user else None, data.password)
    if user is None or not valid:
        raise InvalidCredentials()
    issued = services.tokens.issue(user.id)
    return LoginResponse(token=issued.token, expires_in=issued.expires_in, message="Logged in.")
