from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from goodnight.deps import AUTHENTICATED, CurrentUserId, SessionDep, TimelineDep
from goodnight.errors import error_responses
from goodnight.feed import service
from goodnight.feed.schemas import FeedPage
from goodnight.kit.schema import Cursor

router = APIRouter(prefix="/sleep_records", tags=["feed"], dependencies=AUTHENTICATED)


@router.get("/followings", response_model=FeedPage, responses=error_responses(401))
async def followings_feed(
    session: SessionDep,
    timeline: TimelineDep,
    me: CurrentUserId,
    per_page: Annotated[int, Query(ge=1, le=100, description="Items per page, 1..100.")] = 10,
    cursor: Cursor = None,
    start_index: Annotated[
        int | None, Query(ge=0, le=1_000_000, description="Offset paging for clients of the original API.")
    ] = None,
) -> Response:
    """Completed sleep records of everyone you follow from the past 7 days, longest first."""
    page = await service.followings_feed(
        session, me, per_page=per_page, cursor=cursor, start_index=start_index, timeline=timeline
    )
    # Serialised once, straight to bytes; the legacy offset fields appear only when they were asked for.
    return Response(page.model_dump_json(exclude_unset=True), media_type="application/json")
