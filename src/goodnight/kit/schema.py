"""Shared response pieces: timestamps, pagination envelopes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema
from typing_extensions import TypedDict

from goodnight.kit.clock import format_utc

Timestamp = Annotated[
    datetime,
    PlainSerializer(format_utc, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "example": "2026-11-28T22:30:00.000Z"}),
]

MAX_LIMIT = 100
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size, 1..100.")]
MAX_CURSOR_LENGTH = 512
Cursor = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_LENGTH,
        description="The next_cursor of the previous page; omit for the first page.",
    ),
]
DEFAULT_LIMIT = 20

Item = TypeVar("Item")


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Pagination(BaseModel):
    next_cursor: str | None


class Page(BaseModel, Generic[Item]):
    data: list[Item]
    pagination: Pagination


# ``Pagination`` and ``Page`` as plain dicts, field for field: rendered by pydantic's serializer they give the
# models' very bytes, without a model to build and validate per item (see ``socials.router``).
class PaginationFields(TypedDict):
    next_cursor: str | None


class PageFields(TypedDict, Generic[Item]):
    data: list[Item]
    pagination: PaginationFields


class Message(BaseModel):
    message: str
