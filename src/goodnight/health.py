"""Liveness and readiness."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from goodnight.deps import services_of
from goodnight.errors import GoodnightError, error_responses
from goodnight.jobs import outbox
from goodnight.redis_client import REDIS_ERRORS
from goodnight.replicas.routing import ReadRouting

router = APIRouter(prefix="/health", tags=["health"])


class Health(BaseModel):
    status: str


class OutboxBacklog(BaseModel):
    pending: int
    in_flight: int
    dead: int
    oldest_age_seconds: float | None


class ReplicaHealth(BaseModel):
    name: str = Field(description="host:port of the replica.")
    status: str = Field(description='"ok" (serving reads), "lagging" (too far behind) or "down".')
    lag_seconds: float | None = Field(description="How far behind the primary it was at the last sample.")


class ReadReplicas(BaseModel):
    replicas: list[ReplicaHealth]
    reads_from_primary: int = Field(description="Routed reads this process sent to the primary.")
    reads_from_replicas: int = Field(description="Routed reads this process sent to a replica.")


class Readiness(BaseModel):
    status: str  # "ok", or "degraded" while Redis is away (feeds are then served from SQL)
    database: str  # "ok" or "down"
    redis: str  # "ok", "down" or "disabled"
    outbox: OutboxBacklog | None
    read_replicas: ReadReplicas | None = Field(
        default=None, description="Read replicas, their lag and this process's routing; absent without any."
    )


@router.get("", response_model=Health)
async def health() -> Health:
    """Liveness: the process is up and serving."""
    return Health(status="ok")


class NotReady(GoodnightError):
    status_code = 503
    code = "unavailable"
    default_message = "The database is not answering."


@router.get(
    "/ready", response_model=Readiness, response_model_exclude_unset=True, responses=error_responses(503)
)
async def ready(request: Request) -> Readiness:
    """Readiness: 503 unless the database answers; Redis and the outbox backlog are reported."""
    services = services_of(request)
    database, backlog = "ok", None
    try:
        async with services.database.reader() as session:
            await session.execute(sa.text("SELECT 1"))
            if services.timeline is not None:
                backlog = OutboxBacklog(**dataclasses.asdict(await outbox.status(session)))
    except Exception:  # any failure to reach the database means "not ready", never a 500
        database = "down"
    redis = "disabled"
    if services.timeline is not None:
        try:
            await services.timeline.redis.ping()
            redis = "ok"
        except REDIS_ERRORS:
            redis = "down"
    if database == "down":
        raise NotReady(details={"database": database, "redis": redis})
    readiness = Readiness(
        status="degraded" if redis == "down" else "ok", database=database, redis=redis, outbox=backlog
    )
    if services.read_routing is not None:  # left out (unset) without replicas, as before them
        readiness.read_replicas = _read_replicas(services.read_routing)
    return readiness


def _read_replicas(routing: ReadRouting) -> ReadReplicas:
    return ReadReplicas(
        replicas=[
            ReplicaHealth(name=replica.name, status=replica.status, lag_seconds=replica.lag_seconds)
            for replica in routing.replicas.replicas
        ],
        reads_from_primary=routing.reads["primary"],
        reads_from_replicas=routing.reads["replica"],
    )
