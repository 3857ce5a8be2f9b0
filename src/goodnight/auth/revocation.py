"""Which tokens this process refuses although their signature and lifetime are good: the in-memory half of
logout and password change.

``Tokens.verify`` consults a ``RevocationList`` on every request, so the check is two dictionary look-ups and
never a query. ``revocation_feed.RevocationFeed`` fills the list: from the database at start-up, then by
polling for new revocations every half second, and at once for the ones this process wrote itself.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from goodnight.errors import ServiceUnavailable, Unauthorized, retry_after

if TYPE_CHECKING:
    from goodnight.auth.tokens import TokenClaims

# Entries are kept this long past the moment they stop matching any live token: a token's ``exp`` is judged
# by the clock of whichever server checks it, and servers' clocks disagree a little.
CLOCK_SKEW_SECONDS = 30.0


class TokenRevoked(Unauthorized):
    default_message = "The bearer token has been revoked; log in again."


class RevocationsUnknown(ServiceUnavailable, Unauthorized):
    """This process has not loaded the revocations yet (the database has not answered since it started), so
    it cannot tell a revoked token from a good one. A 503, and also an ``Unauthorized``: whoever asks whether
    the token is good (the rate limiter) must not take it as a proof of identity either."""

    default_message = "Tokens cannot be checked yet; try again shortly."

    def __init__(self) -> None:
        super().__init__(headers=retry_after(1))


@dataclass(frozen=True, slots=True)
class Revocation:
    """One token (``token_id``), or every token of the user issued before ``issued_before_ms``."""

    user_id: uuid.UUID
    token_id: str | None
    issued_before_ms: int | None
    # Epoch seconds after which no token the entry matches can still be valid.
    expires_at: float


class RevocationList:
    def __init__(self, *, loaded: bool = False) -> None:
        # Until the first load, nothing is known: every token is refused with 503 rather than maybe accepted.
        self.loaded = loaded
        self._tokens: dict[str, float] = {}  # jti -> when to forget it
        # user id -> (tokens issued before this many epoch ms are revoked, when to forget it). Keyed by the
        # id's integer: hashing a UUID object runs Python code on every check, hashing an int does not.
        self._cutoffs: dict[int, tuple[int, float]] = {}

    def check(self, claims: TokenClaims) -> None:
        """Raise ``TokenRevoked`` for a revoked token, ``RevocationsUnknown`` before the first load."""
        if not self.loaded:
            raise RevocationsUnknown()
        if claims.token_id in self._tokens:
            raise TokenRevoked()
        if self._cutoffs:
            cutoff = self._cutoffs.get(claims.user_id.int)
            if cutoff is not None and claims.issued_at_ms < cutoff[0]:
                raise TokenRevoked()

    def add(self, revocation: Revocation) -> None:
        if revocation.token_id is not None:
            self._tokens[revocation.token_id] = revocation.expires_at
        if revocation.issued_before_ms is not None:
            # A later password change moves the cutoff forward, never back.
            user = revocation.user_id.int
            before, expires_at = self._cutoffs.get(user, (0, 0.0))
            self._cutoffs[user] = (
                max(before, revocation.issued_before_ms),
                max(expires_at, revocation.expires_at),
            )

    def forget_expired(self, now: float | None = None) -> None:
        """Drop entries that can no longer match a live token, so memory tracks revocations in force."""
        horizon = (time.time() if now is None else now) - CLOCK_SKEW_SECONDS
        self._tokens = {jti: until for jti, until in self._tokens.items() if until > horizon}
        self._cutoffs = {user: entry for user, entry in self._cutoffs.items() if entry[1] > horizon}

    def __len__(self) -> int:
        return len(self._tokens) + len(self._cutoffs)
