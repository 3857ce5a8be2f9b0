"""Logging a forgotten night (``POST /sleep_records``), the way tests need it."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Any

import httpx

from tests.support.api import Member
from tests.support.times import iso


def log_night(
    client: httpx.AsyncClient, who: Member, start: datetime | str, end: datetime | str
) -> Awaitable[httpx.Response]:
    """The request, not yet awaited (races start many at once); strings are sent as they are."""
    body = {
        "clocked_in_at": start if isinstance(start, str) else iso(start),
        "clocked_out_at": end if isinstance(end, str) else iso(end),
    }
    return client.post("/sleep_records", json=body, headers=who.headers)


async def logged(client: httpx.AsyncClient, who: Member, start: datetime, end: datetime) -> dict[str, Any]:
    """A night that must be accepted: the record."""
    response = await log_night(client, who, start, end)
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    return record
