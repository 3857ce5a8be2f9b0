"""What a feed page is made of, and what a faster source of pages than SQL must promise.

The SQL feed (``service``) is the truth. A ``FastFeed`` (the Redis timelines are one) may answer a page
instead, but only with exactly what SQL would send, or not at all: ``None`` sends the page to SQL.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol


class PageItem(NamedTuple):
    """One item of a page. A tuple, not a frozen dataclass: a page makes a dozen, and a frozen dataclass's
    ``__init__`` costs several times a tuple's."""

    position: bytes  # (duration, id), see ``position``: the feed's order, and the next page's cursor
    item: bytes  # the feed item's JSON


@dataclass(frozen=True, slots=True)
class PageRequest:
    reader: uuid.UUID
    since: datetime  # the window's start, pinned by the cursor for a whole scroll
    limit: int
    after: tuple[int, uuid.UUID] | None  # (duration, id) of the last item already seen


class FastFeed(Protocol):
    async def page(self, request: PageRequest) -> list[PageItem] | None:
        """Up to ``limit`` items in feed order after ``after``, each rendered as the SQL feed renders it;
        None when this source cannot answer truthfully right now."""
        ...
