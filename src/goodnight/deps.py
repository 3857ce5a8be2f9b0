"""What a route needs, and the one way it gets it.

* Who is calling: ``CurrentUserId`` (or ``CurrentToken``), a dependency; routers that hold only
  authenticated routes also list ``AUTHENTICATED``.
* The request's unit of work: ``SessionDep`` to read, ``WriteSessionDep`` to write; a dependency, because it
  commits (or rolls back) before the response is sent.
* The process's services (the database, passwords, tokens, the event publisher, the fast feed...):
  ``services_of(request)``, with the route taking ``request: Request``. Not a dependency: FastAPI resolves
  each dependency on every request, and a lookup needs none of that.

Every route is written this way, the hottest one (the feed page) included.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Scope

from goodnight.auth.passwords import Passwords
from goodnight.auth.revocation_feed import RevocationFeed
from goodnight.auth.tokens import TokenClaims, Tokens
from goodnight.config import Settings
from goodnight.db import Database, after_commit, session_scope
from goodnight.errors import GoodnightError, Unauthorized
from goodnight.feed.pages import FastFeed
from goodnight.jobs.publish import Events
from goodnight.jobs.runtime import Jobs
from goodnight.ratelimit.limiter import RateLimiter
from goodnight.replicas.routing import ReadRouting
from goodnight.timeline.runtime import Timeline
from goodnight.users.profiles import CachedProfiles


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
    # Pages faster than SQL's, when configured (the Redis timelines' reader); None: SQL answers every page.
    fast_feed: FastFeed | None = None
    timeline: Timeline | None = None
    read_routing: ReadRouting | None = None  # reads sent to replicas, when any are configured
    profiles: CachedProfiles | None = None  # profiles kept in memory, when Redis can tell of writes

    @property
    def events(self) -> Events:
        """What services publish domain events with (writing nothing while no one consumes them)."""
        return self.jobs.events


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# Dependencies are ``async def`` even when they do not await: FastAPI runs a plain ``def`` dependency in a
# worker thread, which costs more than everything these do.


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    services = services_of(request)
    database = services.database
    reader = signed_in(request) if services.read_routing is not None else None
    async with session_scope(lambda: database.read_session(reader)) as session:
        yield session


async def _write_session(request: Request) -> AsyncIterator[AsyncSession]:
    services = services_of(request)
    routing = services.read_routing
    async with session_scope(services.database.writer) as session:
        if routing is not None:
            after_commit(session, partial(_remember_the_write, routing, request))
        yield session


async def _remember_the_write(routing: ReadRouting, request: Request) -> None:
    # Runs after commit, when the route has run: its auth dependency has named the user by then.
    user_id = getattr(request.state, "user_id", None)
    if user_id is not None:
        await routing.wrote(uuid.UUID(user_id))


def signed_in(request: Request) -> uuid.UUID | None:
    """Who a valid bearer token says is calling, or None: for read-your-writes (dependencies run in no set
    order, so the session may be opened before the auth dependency has run) and for the fast lanes. A bad
    token is the auth dependency's to refuse."""
    user_id = getattr(request.state, "user_id", None)
    if user_id is not None:
        return uuid.UUID(user_id)
    scheme, _, token = _authorization(request.scope).partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        claims = services_of(request).tokens.verify_claims(token)
    except GoodnightError:  # not valid, or not checkable right now: the auth dependency answers for it
        return None
    request.state.user_id = str(claims.user_id)
    return claims.user_id


def _authorization(scope: Scope) -> str:
    """The Authorization header (the first one), read off the raw headers as Starlette's ``Headers`` would
    read it: building that mapping costs a signed-in fast lane more than the look-up it serves."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"authorization":
            return value.decode("latin-1")
    return ""


# scope="function": the transaction commits before the response is sent, so a client that gets a 2xx can
# rely on its write being durable and visible to its very next request.
SessionDep = Annotated[AsyncSession, Depends(_read_session, scope="function")]
WriteSessionDep = Annotated[AsyncSession, Depends(_write_session, scope="function")]


class _Bearer(HTTPBearer):
    """A bearer token read and verified in one dependency. Being an ``HTTPBearer``, it puts the scheme in the
    OpenAPI document of every route using it; being one dependency rather than HTTPBearer's plus one that
    verifies its result, it costs half as much to resolve. It runs before the query and body are validated,
    so a caller without a valid token gets 401, not 422."""

    def __init__(self) -> None:
        super().__init__(
            auto_error=False, scheme_name="HTTPBearer", description="A token from POST /api/v1/auth/login"
        )

    async def claims(self, request: Request) -> TokenClaims:
        credentials = await super().__call__(request)
        if credentials is None:
            raise Unauthorized()
        claims = services_of(request).tokens.verify_claims(credentials.credentials)
        request.state.user_id = str(claims.user_id)
        return claims


class _BearerUserId(_Bearer):
    async def __call__(self, request: Request) -> uuid.UUID:  # type: ignore[override]
        return (await self.claims(request)).user_id


class _BearerToken(_Bearer):
    async def __call__(self, request: Request) -> TokenClaims:  # type: ignore[override]
        return await self.claims(request)


_current_user_id = _BearerUserId()
CurrentUserId = Annotated[uuid.UUID, Depends(_current_user_id)]
# The verified token itself, for the routes that act on it (logout).
CurrentToken = Annotated[TokenClaims, Depends(_BearerToken())]
# Routers built with these dependencies require a bearer token on every route they hold.
AUTHENTICATED = [Depends(_current_user_id)]
