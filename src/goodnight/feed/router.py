from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from goodnight.deps import CurrentUserId, services_of, signed_in
from goodnight.errors import error_responses
from goodnight.feed import service
from goodnight.feed.schemas import FeedPage
from goodnight.kit.fast_lane import DECLINED, FastLane, plain_int, plain_text
from goodnight.kit.schema import MAX_CURSOR_LENGTH, Cursor

router = APIRouter(prefix="/sleep_records", tags=["feed"])
DEFAULT_PER_PAGE = 10
MAX_PER_PAGE = 100
MAX_START_INDEX = 1_000_000


@router.get("/followings", response_model=FeedPage, responses=error_responses(401))
async def followings_feed(
    request: Request,
    me: CurrentUserId,
    per_page: Annotated[
        int, Query(ge=1, le=MAX_PER_PAGE, description="Items per page, 1..100.")
    ] = DEFAULT_PER_PAGE,
    cursor: Cursor = None,
    start_index: Annotated[
        int | None,
        Query(ge=0, le=MAX_START_INDEX, description="Offset paging for clients of the original API."),
    ] = None,
) -> Response:
    """Completed sleep records of everyone you follow from the past 7 days, longest first."""
    return await _page(request, me, per_page, cursor, start_index)


async def followings_feed_fast(request: Request) -> Response | None:
    """The feed's fast lane (``kit.fast_lane``): parameters given plainly and within bounds."""
    me = signed_in(request)
    if me is None:
        return None
    query = request.query_params
    per_page = plain_int(query, "per_page", MAX_PER_PAGE, lowest=1)
    start_index = plain_int(query, "start_index", MAX_START_INDEX)
    cursor = plain_text(query, "cursor", MAX_CURSOR_LENGTH)
    if per_page is DECLINED or start_index is DECLINED or cursor is DECLINED:
        return None
    return await _page(request, me, per_page or DEFAULT_PER_PAGE, cursor, start_index)


async def _page(
    request: Request, me: uuid.UUID, per_page: int, cursor: str | None, start_index: int | None
) -> Response:
    # No request-wide database session: a page from the fast feed needs none, and SQL opens its own.
    services = services_of(request)
    body = await service.followings_feed(
        services.database, services.fast_feed, me, per_page=per_page, cursor=cursor, start_index=start_index
    )
    return Response(body, media_type="application/json")


FAST_LANES = [FastLane("/sleep_records/followings", followings_feed_fast)]
