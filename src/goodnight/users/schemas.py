from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from goodnight.kit.schema import Schema, Timestamp
from goodnight.kit.text import DisplayText, UnicodeText
from goodnight.models.user import USERNAME_PATTERN

NewPassword = Annotated[UnicodeText, Field(min_length=8, max_length=128)]
# Loose, as at login: a long or odd attempt is simply a wrong password.
GivenPassword = Annotated[UnicodeText, Field(max_length=1024)]
NAME_MAX_LENGTH = 60


class UserCreate(BaseModel):
    username: str = Field(pattern=USERNAME_PATTERN, description="3-30 letters, digits or underscores.")
    password: NewPassword
    name: DisplayText | None = Field(default=None, max_length=NAME_MAX_LENGTH)


class ProfileUpdate(BaseModel):
    # Required, though it may be null: a body without it would change nothing, which is more likely a mistake.
    name: DisplayText | None = Field(
        max_length=NAME_MAX_LENGTH, description="The name others see (1-60 characters), or null for none."
    )


class PasswordChange(BaseModel):
    current_password: GivenPassword
    new_password: NewPassword


class AccountDeletion(BaseModel):
    password: GivenPassword = Field(description="Your password, to confirm.")


class UserSummary(Schema):
    id: uuid.UUID
    username: str
    name: str | None


class UserSummaryFields(TypedDict):
    """``UserSummary`` as a plain dict, field for field (like ``kit.schema.PageFields``)."""

    id: uuid.UUID
    username: str
    name: str | None


class UserOut(UserSummary):
    created_at: Timestamp
    followers_count: int
    followings_count: int


class Person(Schema):
    """Someone found by a search, and whether the searcher follows them."""

    id: uuid.UUID
    username: str
    name: str | None
    followers_count: int
    followings_count: int
    followed_by_me: bool


class PeoplePagination(BaseModel):
    per_page: int
    next_cursor: str | None


class PeoplePage(BaseModel):
    data: list[Person]
    pagination: PeoplePagination
