from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from goodnight.kit.schema import Schema, Timestamp
from goodnight.kit.text import DisplayText, UnicodeText

USERNAME_PATTERN = r"^[A-Za-z0-9_]{3,30}$"


class UserCreate(BaseModel):
    username: str = Field(pattern=USERNAME_PATTERN, description="3-30 letters, digits or underscores.")
    password: UnicodeText = Field(min_length=8, max_length=128)
    name: DisplayText | None = Field(default=None, max_length=60)


class UserSummary(Schema):
    id: uuid.UUID
    username: str
    name: str | None


class UserOut(UserSummary):
    created_at: Timestamp
    followers_count: int
    followings_count: int
