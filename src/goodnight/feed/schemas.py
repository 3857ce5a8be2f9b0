from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from goodnight.kit.schema import Timestamp
from goodnight.users.schemas import UserSummary


class FeedItem(BaseModel):
    id: uuid.UUID
    clocked_in_at: Timestamp
    clocked_out_at: Timestamp
    duration: int
    humanized_duration: str
    user: UserSummary


class FeedPagination(BaseModel):
    """The original app's offset fields come first, as it sends them; ``next_cursor`` continues any page.

    Pages asked for without a ``cursor`` always carry ``start_index`` and ``last_index``; pages asked for with
    one leave them out (a cursor does not know its offset)."""

    start_index: int | None = Field(
        default=None, description="Index of the page's first item; present when no cursor was sent."
    )
    per_page: int
    last_index: int | None = Field(
        default=None,
        description="start_index + (items on the page) - 1, and start_index on an empty page (the original "
        "app's rule); present when no cursor was sent. The next offset page starts at last_index + 1.",
    )
    next_cursor: str | None


class FeedPage(BaseModel):
    data: list[FeedItem]
    pagination: FeedPagination
