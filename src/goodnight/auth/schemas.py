from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from goodnight.kit.text import UnicodeText


class LoginRequest(BaseModel):
    # Deliberately loose: a login attempt with a malformed name is just a failed login, not a 422 that would
    # reveal which usernames could exist.
    username: str = Field(max_length=200)
    password: UnicodeText = Field(max_length=1024)


class LoginResponse(BaseModel):
    token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  (a scheme name, not a secret)
    expires_in: int
    message: str
