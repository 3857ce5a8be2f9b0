from __future__ import annotations

import uuid

from pydantic import BaseModel

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
    per_page: int
    next_cursor: str | None
    start_index: int | None = None
    last_index: int | None = None


class FeedPage(BaseModel):
    data: list[FeedItem]
    pagination: FeedPagination
