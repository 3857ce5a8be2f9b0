from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from goodnight.deps import BEARER_SECURITY, BearerUserId, Services
from goodnight.errors import error_responses
from goodnight.feed import service
from goodnight.feed.schemas import FeedPage
from goodnight.kit.schema import Cursor

router = APIRouter(prefix="/sleep_records", tags=["feed"])


@router.get(
    "/followings", response_model=FeedPage, responses=error_responses(401), openapi_extra=BEARER_SECURITY
)
async def followings_feed(
    request: Request,
    me: BearerUserId,
    per_page: Annotated[int, Query(ge=1, le=100, description="Items per page, 1..100.")] = 10,
    cursor: Cursor = None,
    start_index: Annotated[
        int | None, Query(ge=0, le=1_000_000, description="Offset paging for clients of the original API.")
    ] = None,
) -> Response:
    """Completed sleep records of everyone you follow from the past 7 days, longest first."""
    # The hottest route takes its services without dependencies (each costs on every request), and opens no
    # request-wide database session: a page from Redis needs none, SQL opens its own.
    services: Services = request.app.state.services
    fast = services.timeline.reader if services.timeline is not None else None
    body = await service.followings_feed(
        services.database, me, per_page=per_page, cursor=cursor, start_index=start_index, fast=fast
    )
    return Response(body, media_type="application/json")
