from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from goodnight.kit.schema import Schema, Timestamp

USERNAME_PATTERN = r"^[A-Za-z0-9_]{3,30}$"


def _printable(value: str | None) -> str | None:
    # Control characters (NUL above all, which PostgreSQL refuses to store) have no place in a display name.
    if value is not None and any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("must not contain control characters")
    return value


class UserCreate(BaseModel):
    username: str = Field(pattern=USERNAME_PATTERN, description="3-30 letters, digits or underscores.")
    password: str = Field(min_length=8, max_length=128)
    name: Annotated[str | None, AfterValidator(_printable)] = Field(default=None, max_length=60)


class UserSummary(Schema):
    id: uuid.UUID
    username: str
    name: str | None


class UserOut(UserSummary):
    created_at: Timestamp
    followers_count: int
    followings_count: int
