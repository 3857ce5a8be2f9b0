"""The followings feed: the past week's completed sleep of everyone you follow, longest first.

Pagination is a keyset on ``(duration, id)``. The cursor also carries the window's start, so every page of one
scroll uses the same week: records added mid-scroll land either before the cursor (not shown) or after it
(shown once), and nothing is ever repeated or skipped.

Clients of the original app page by offset instead (``start_index``, then ``last_index + 1``). Their first
page is the cursor scroll's first page, served the same way; only a later offset page needs SQL's OFFSET.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from goodnight.db import Database
from goodnight.errors import ValidationFailed
from goodnight.feed.pages import FastFeed, PageItem, PageRequest
from goodnight.feed.position import encode_position, parse_position
from goodnight.feed.render import render_item, render_page
from goodnight.feed.repository import feed_rows
from goodnight.feed.schemas import FeedPagination
from goodnight.feed.window import MAX_CURSOR_AGE, WINDOW
from goodnight.kit.clock import utcnow
from goodnight.kit.cursor import decode_cursor, encode_cursor
from goodnight.kit.keyset import split_page
from goodnight.observability import metrics
from goodnight.users import repository as users

# A cursor may pin a window a little newer than now's too, for API servers whose clocks disagree slightly.
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
    database: Database,
    fast: FastFeed | None,
    user_id: uuid.UUID,
    *,
    per_page: int,
    cursor: str | None,
    start_index: int | None,
) -> bytes:
    """The page's JSON document (``FeedPage``).

    Without a cursor the page is the original app's offset page from ``start_index`` (default 0), and says
    so in ``start_index`` and ``last_index``; its ``next_cursor`` carries on from its last item all the same.
    """
    if cursor is not None and start_index is not None:
        raise ValidationFailed("Pass either cursor or start_index, not both.", details={"field": "cursor"})
    now = utcnow()
    since = now - WINDOW
    after = None
    if cursor is not None:
        position = FeedCursor.decode(cursor, now)
        since, after = position.since, (position.duration, position.record_id)
    offset = start_index or 0
    items = None
    if fast is not None and offset == 0:
        # The fast source (precomputed timelines) when it can answer truthfully; None sends us to SQL (same
        # answer). It seeks by cursor only: a later offset page is SQL's.
        items = await fast.page(PageRequest(user_id, since, per_page + 1, after))
    else:
        metrics.feed_from_sql(metrics.NO_REDIS if fast is None else metrics.OFFSET)
    if items is None:
        items = await _from_sql(database, user_id, since, per_page + 1, after, offset)
    page, more = split_page(items, per_page)
    next_cursor = FeedCursor(*parse_position(page[-1].position), since).encode() if more else None
    if cursor is None:
        last_index = offset + len(page) - 1 if page else offset
        pagination = FeedPagination(
            start_index=offset, per_page=per_page, last_index=last_index, next_cursor=next_cursor
        )
    else:
        pagination = FeedPagination(per_page=per_page, next_cursor=next_cursor)
    return render_page([entry.item for entry in page], pagination)


async def _from_sql(
    database: Database,
    user_id: uuid.UUID,
    since: datetime,
    limit: int,
    after: tuple[int, uuid.UUID] | None,
    offset: int,
) -> list[PageItem]:
    async with database.read_session(user_id) as session:
        rows = await feed_rows(session, user_id, since=since, limit=limit, after=after, offset=offset)
        # The window scan's rows get their authors in one more query (joining them would run before the sort).
        people = await users.summaries(session, {row.user_id for row in rows})
    return [
        PageItem(encode_position(row.duration, row.id), render_item(row, people[row.user_id])) for row in rows
    ]
