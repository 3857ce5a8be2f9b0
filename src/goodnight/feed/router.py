from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from goodnight.deps import CurrentUserId, services_of
from goodnight.errors import error_responses
from goodnight.feed import service
from goodnight.feed.schemas import FeedPage
from goodnight.kit.schema import Cursor

router = APIRouter(prefix="/sleep_records", tags=["feed"])


@router.get("/followings", response_model=FeedPage, responses=error_responses(401))
async def followings_feed(
    request: Request,
    me: CurrentUserId,
    per_page: Annotated[int, Query(ge=1, le=100, description="Items per page, 1..100.")] = 10,
    cursor: Cursor = None,
    start_index: Annotated[
        int | None, Query(ge=0, le=1_000_000, description="Offset paging for clients of the original API.")
    ] = None,
) -> Response:
    """Completed sleep records of everyone you follow from the past 7 days, longest first."""
    # No request-wide database session: a page from the fast feed needs none, and SQL opens its own.
    services = services_of(request)
    body = await service.followings_feed(
        services.database, services.fast_feed, me, per_page=per_page, cursor=cursor, start_index=start_index
    )
    return Response(body, media_type="application/json")
