"""Logging in: a username and password exchanged for a token.

The password check never holds a database connection: the user is read in a short session that is closed
before Argon2 runs (~0.2 s of CPU and 64 MiB per check), so a flood of logins queues for hashing, bounded by
``Passwords``, instead of pinning the connection pool with idle transactions.
"""

from __future__ import annotations

import re

from goodnight.auth.passwords import Passwords
from goodnight.auth.tokens import IssuedToken, Tokens
from goodnight.db import Database
from goodnight.errors import Unauthorized
from goodnight.users import repository as users
from goodnight.users.schemas import USERNAME_PATTERN

USERNAME_RE = re.compile(USERNAME_PATTERN.strip("^$"))


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    default_message = "Unknown username or wrong password."


async def login(
    database: Database, passwords: Passwords, tokens: Tokens, username: str, password: str
) -> IssuedToken:
    """A token for the user, or ``InvalidCredentials`` (the same answer for an unknown name)."""
    password_hash = None
    user_id = None
    # Only names that could have been registered reach the database: no NULs or odd collation matches.
    if USERNAME_RE.fullmatch(username) is not None:
        async with database.reader() as session:
            user = await users.get_by_username(session, username)
            if user is not None:
                user_id, password_hash = user.id, user.password_hash
    # Always run one Argon2 verification, so an unknown user takes as long as a wrong password.
    valid = await passwords.verify(password_hash, password)
    if user_id is None or not valid:
        raise InvalidCredentials()
    return tokens.issue(user_id)
