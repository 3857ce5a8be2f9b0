"""Finding people: by exact username, or by the start of one, keyset-paged in username order."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.errors import ValidationFailed
from goodnight.kit.cursor import MalformedCursor, decode_cursor, encode_cursor
from goodnight.kit.keyset import split_page
from goodnight.users import repository
from goodnight.users.repository import PersonRow
from goodnight.users.schemas import PeoplePage, PeoplePagination, Person

# A cursor holds the last username key of a page: a lower-cased username.
_KEY = re.compile(r"[a-z0-9_]{1,30}")


class OneWayToSearch(ValidationFailed):
    default_message = "Pass either 'username' (an exact name) or 'q' (the start of names), not both."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, details={"field": "query"})


def upper_bound(prefix: str) -> str:
    """The least key above every key that starts with ``prefix``, in byte order.

    The alphabet's last character is "z", so incrementing the prefix's last character never carries: the
    names starting with "ab" are exactly those in ["ab", "ac"), and "a_" in ["a_", "a`").
    """
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def find_people(
    session: AsyncSession,
    viewer: uuid.UUID,
    *,
    username: str | None,
    prefix: str | None,
    per_page: int,
    cursor: str | None,
) -> PeoplePage:
    if username is not None and prefix is None:
        if cursor is not None:
            raise OneWayToSearch("An exact 'username' search has one page; 'cursor' pages a 'q' search.")
        found = await repository.find_by_key(session, viewer, username.lower())
        return _page(found, per_page, next_cursor=None)
    if prefix is None or username is not None:
        raise OneWayToSearch()
    lowest = prefix.lower()
    rows = await repository.find_by_key_range(
        session,
        viewer,
        lowest=lowest,
        below=upper_bound(lowest),
        after=_after(cursor),
        limit=per_page,
    )
    page, more = split_page(rows, per_page)
    next_cursor = encode_cursor(page[-1].username_key) if more else None
    return _page(page, per_page, next_cursor)


def _after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    (key,) = decode_cursor(cursor, (str,))
    if not _KEY.fullmatch(key):  # keys only ever hold this alphabet; anything else is forged
        raise MalformedCursor()
    return str(key)


def _page(rows: Sequence[PersonRow], per_page: int, next_cursor: str | None) -> PeoplePage:
    people = [Person.model_validate(row) for row in rows]
    return PeoplePage(data=people, pagination=PeoplePagination(per_page=per_page, next_cursor=next_cursor))
