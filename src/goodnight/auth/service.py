"""Logging in: a username and password exchanged for a token.

The password check never holds a database connection: the user is read in a short session that is closed
before Argon2 runs (~0.2 s of CPU and 64 MiB per check), so a flood of logins queues for hashing, bounded by
``Passwords``, instead of pinning the connection pool with idle transactions.
"""

from __future__ import annotations

import re

from goodnight.auth import repository
from goodnight.auth.passwords import Passwords
from goodnight.auth.tokens import IssuedToken, Tokens
from goodnight.db import Database
from goodnight.errors import Unauthorized
from goodnight.kit.ids import new_id
from goodnight.models.user import USERNAME_PATTERN
from goodnight.ratelimit.limiter import RateLimiter

USERNAME_RE = re.compile(USERNAME_PATTERN.strip("^$"))


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    default_message = "Unknown username or wrong password."


async def login(
    database: Database,
    passwords: Passwords,
    tokens: Tokens,
    limiter: RateLimiter,
    username: str,
    password: str,
) -> IssuedToken:
    """A token for the user, or ``InvalidCredentials`` (the same answer for an unknown name).

    A username with too many failed attempts is refused with ``RateLimited`` before anything else, so it
    costs no hash; a success clears its count.
    """
    await limiter.start_login_attempt(username)
    password_hash = None
    user_id = None
    token_id = None
    # The hashing slot first: a login refused because hashing is saturated has cost no query, and a flood
    # of logins reads the database no faster than it can hash.
    async with passwords.slot() as hashing:
        # Only names that could have been registered reach the database: no NULs or odd collation matches.
        if USERNAME_RE.fullmatch(username) is not None:
            async with database.reader() as session:
                found = await repository.credentials(session, username)
                # The token is dated now, when the hash is read, not after the check: a password change
                # that commits while this login hashes revokes what was issued before it, this one too.
                token_id = new_id()
                if found is not None:
                    user_id, password_hash = found
        # Always run one Argon2 verification, so an unknown user takes as long as a wrong password.
        valid = await hashing.verify(password_hash, password)
    if user_id is None or not valid:
        raise InvalidCredentials()
    await limiter.login_succeeded(username)
    if database.routing is not None:
        # A fresh sign-in may follow a sign-up the replicas have not replayed yet.
        await database.routing.wrote(user_id)
    return tokens.issue(user_id, token_id)
