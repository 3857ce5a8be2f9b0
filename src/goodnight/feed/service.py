"""The followings feed: the past week's completed sleep of everyone you follow, longest first.

Pagination is a keyset on ``(duration, id)``. The cursor also carries the window's start, so every page of one
scroll uses the same week: records added mid-scroll land either before the cursor (not shown) or after it
(shown once), and nothing is ever repeated or skipped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.errors import ValidationFailed
from goodnight.feed.humanize import humanize_duration
from goodnight.feed.repository import FeedRow, feed_rows
from goodnight.feed.schemas import FeedItem, FeedPage, FeedPagination
from goodnight.kit.clock import utcnow
from goodnight.kit.cursor import decode_cursor, encode_cursor
from goodnight.kit.keyset import split_page
from goodnight.timeline.reader import PageRequest, TimelineReader
from goodnight.users import repository as users
from goodnight.users.schemas import UserSummary

WINDOW = timedelta(days=7)
# A cursor may pin a window this much older than "now" (someone scrolling slowly), no more; and a little
# newer, for API servers whose clocks disagree slightly.
MAX_CURSOR_AGE = timedelta(days=1)
CLOCK_TOLERANCE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class FeedCursor:
    duration: int
    record_id: uuid.UUID
    since: datetime

    def encode(self) -> str:
        return encode_cursor(self.duration, self.record_id, self.since)

    @classmethod
    def decode(cls, token: str, now: datetime) -> FeedCursor:
        duration, record_id, since = decode_cursor(token, (int, uuid.UUID, datetime))
        if not now - WINDOW - MAX_CURSOR_AGE <= since <= now - WINDOW + CLOCK_TOLERANCE:
            raise ValidationFailed(
                "The cursor has expired; start again from the first page.", details={"field": "cursor"}
            )
        return cls(duration, record_id, since)


async def followings_feed(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    per_page: int,
    cursor: str | None,
    start_index: int | None,
    timeline: TimelineReader | None = None,
) -> FeedPage:
    if cursor is not None and start_index is not None:
        raise ValidationFailed("Pass either cursor or start_index, not both.", details={"field": "cursor"})
    now = utcnow()
    since = now - WINDOW
    after = None
    if cursor is not None:
        position = FeedCursor.decode(cursor, now)
        since, after = position.since, (position.duration, position.record_id)
    rows = None
    if timeline is not None and start_index is None:
        # The precomputed timeline when it can answer truthfully; None sends us to SQL (same answer).
        rows = await timeline.page(session, PageRequest(user_id, since, per_page + 1, after))
    if rows is None:
        rows = await feed_rows(
            session, user_id, since=since, limit=per_page + 1, after=after, offset=start_index or 0
        )
    page, more = split_page(rows, per_page)
    next_cursor = FeedCursor(page[-1].duration, page[-1].id, since).encode() if more else None
    pagination = FeedPagination(per_page=per_page, next_cursor=next_cursor)
    if start_index is not None:
        pagination.start_index = start_index
        pagination.last_index = start_index + len(page) - 1 if page else None
    return FeedPage(data=await _items(session, page), pagination=pagination)


async def _items(session: AsyncSession, rows: list[FeedRow]) -> list[FeedItem]:
    # Rows from the timeline carry their authors already; the SQL window scan's rows get them in one query.
    people = await users.summaries(session, {row.user_id for row in rows if row.author is None})
    return [
        FeedItem(
            id=row.id,
            clocked_in_at=row.clocked_in_at,
            clocked_out_at=row.clocked_out_at,
            duration=row.duration,
            humanized_duration=humanize_duration(row.duration),
            user=UserSummary.model_validate(row.author or people[row.user_id]),
        )
        for row in rows
    ]
