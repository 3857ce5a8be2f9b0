"""Feed items rendered once, straight to JSON bytes.

The SQL path renders each page's rows here; the Redis timeline stores the same bytes per record when the
record is fanned out, so a page served from Redis is assembled by joining stored items, with no model
validation and no database query, and is byte-for-byte what the SQL path would have sent.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

from goodnight.feed.repository import FeedRow
from goodnight.feed.schemas import FeedItem, FeedPagination
from goodnight.kit.clock import to_utc
from goodnight.kit.humanize import humanize_duration
from goodnight.users.schemas import UserSummary

# A stored rendering starts with the clock-in time (epoch milliseconds), so a reader can apply the window's
# exact start without parsing JSON.
_CLOCKED_IN = struct.Struct(">q")
# What a deleted record's rendering is overwritten with: readers skip it, and fanout never writes over it.
TOMBSTONE = b""


def render_item(row: FeedRow, author: object | None = None) -> bytes:
    """The item's JSON; ``author`` is anything with the user's id, username and name (default: the row's)."""
    author = author or row.author
    assert author is not None, "rendering needs the record's author"
    item = FeedItem(
        id=row.id,
        clocked_in_at=row.clocked_in_at,
        clocked_out_at=row.clocked_out_at,
        duration=row.duration,
        humanized_duration=humanize_duration(row.duration),
        user=UserSummary.model_validate(author),
    )
    return item.model_dump_json().encode()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    return (to_utc(moment) - _EPOCH) // _MILLISECOND


def stored_rendering(row: FeedRow) -> bytes:
    return _CLOCKED_IN.pack(epoch_ms(row.clocked_in_at)) + render_item(row)


def parse_rendering(raw: bytes) -> tuple[int, bytes]:
    """(clock-in epoch ms, the item's JSON) of a stored rendering that is not a tombstone."""
    return _CLOCKED_IN.unpack_from(raw)[0], raw[_CLOCKED_IN.size :]


def render_page(items: list[bytes], pagination: FeedPagination) -> bytes:
    """The ``FeedPage`` document; the offset fields appear only when set (on pages asked without a cursor)."""
    return b'{"data":[%b],"pagination":%b}' % (
        b",".join(items),
        pagination.model_dump_json(exclude_unset=True).encode(),
    )
