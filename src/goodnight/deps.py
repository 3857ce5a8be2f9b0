"""Request-scoped dependencies, exposed as ``Annotated`` aliases so endpoint signatures stay short."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.auth.passwords import Passwords
from goodnight.auth.revocation_feed import RevocationFeed
from goodnight.auth.tokens import TokenClaims, Tokens
from goodnight.config import Settings
from goodnight.db import Database, session_scope
from goodnight.errors import Unauthorized
from goodnight.jobs.publish import Events
from goodnight.jobs.runtime import Jobs
from goodnight.ratelimit.limiter import RateLimiter
from goodnight.timeline.runtime import Timeline


@dataclass
class Services:
    """Process-wide objects built once at start-up (see ``main.lifespan``)."""

    settings: Settings
    database: Database
    passwords: Passwords
    tokens: Tokens
    revocations: RevocationFeed
    rate_limiter: RateLimiter
    jobs: Jobs
    timeline: Timeline | None = None

    @property
    def events(self) -> Events:
        """What services publish domain events with (writing nothing while no one consumes them)."""
        return self.jobs.events


# Dependencies are ``async def`` even when they do not await: FastAPI runs a plain ``def`` dependency in a
# worker thread, which costs more than everything these do.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def _events(services: ServicesDep) -> Events:
    return services.events


EventsDep = Annotated[Events, Depends(_events)]


async def _read_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(services.database.reader):
        yield session


async def _write_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(services.database.writer):
        yield session


# scope="function": the transaction commits before the response is sent, so a client that gets a 2xx can
# rely on its write being durable and visible to its very next request.
SessionDep = Annotated[AsyncSession, Depends(_read_session, scope="function")]
WriteSessionDep = Annotated[AsyncSession, Depends(_write_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="A token from POST /api/v1/auth/login")


def _claims(request: Request, credentials: HTTPAuthorizationCredentials | None) -> TokenClaims:
    if credentials is None:
        raise Unauthorized()
    # Services straight from the app, not through ServicesDep: every dependency costs on every request.
    services: Services = request.app.state.services
    claims = services.tokens.verify_claims(credentials.credentials)
    request.state.user_id = str(claims.user_id)
    return claims


def _user_id(request: Request, credentials: HTTPAuthorizationCredentials | None) -> uuid.UUID:
    return _claims(request, credentials).user_id


async def current_user_id(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> uuid.UUID:
    return _user_id(request, credentials)


async def current_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> TokenClaims:
    return _claims(request, credentials)


async def _bearer_user_id(request: Request) -> uuid.UUID:
    return _user_id(request, await _bearer(request))


# ``CurrentUserId`` in one dependency instead of two, for the hottest route: resolving dependencies costs more
# than verifying a cached token. Being a dependency, it still runs before the query is validated (a caller
# without a token gets 401, not 422). A route using it declares ``BEARER_SECURITY`` for the OpenAPI document,
# which no longer sees the HTTPBearer dependency.
BearerUserId = Annotated[uuid.UUID, Depends(_bearer_user_id)]
BEARER_SECURITY: dict[str, Any] = {"security": [{_bearer.scheme_name: []}]}
CurrentUserId = Annotated[uuid.UUID, Depends(current_user_id)]
# The verified token itself, for the routes that act on it (logout).
CurrentToken = Annotated[TokenClaims, Depends(current_token)]
# Routers built with these dependencies require a bearer token on every route they hold.
AUTHENTICATED = [Depends(current_user_id)]
