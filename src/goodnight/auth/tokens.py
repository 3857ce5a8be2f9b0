"""HS256 bearer tokens.

Verification results are cached per token string until the token expires: the signature check dominates the
cost of small authenticated reads, and a token that verified once stays valid until its ``exp``.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from goodnight.errors import Unauthorized
from goodnight.kit.ids import new_id

ALGORITHM = "HS256"
MAX_TOKEN_LENGTH = 4096
CACHE_SIZE = 10_000
# How far in the future a token's ``iat`` may lie: clocks of the servers that issue tokens disagree a little.
MAX_CLOCK_SKEW_SECONDS = 30
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti"]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


class Tokens:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._secret = secret
        self._ttl = ttl_seconds
        self._verified: OrderedDict[str, tuple[uuid.UUID, float]] = OrderedDict()

    def issue(self, user_id: uuid.UUID) -> IssuedToken:
        now = int(time.time())
        claims = {"sub": str(user_id), "iat": now, "exp": now + self._ttl, "jti": new_id().hex}
        return IssuedToken(jwt.encode(claims, self._secret, algorithm=ALGORITHM), self._ttl)

    def verify(self, token: str) -> uuid.UUID:
        """The user id a valid token was issued to; 401 for anything else."""
        cached = self._verified.get(token)
        if cached is not None:
            user_id, expires_at = cached
            if time.time() < expires_at:
                return user_id
            self._verified.pop(token, None)
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("The bearer token is not valid.")
        try:
            # Pinning the algorithm list is what rejects 'alg: none' and algorithm-confusion tokens.
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options={"require": REQUIRED_CLAIMS}
            )
            user_id = uuid.UUID(str(claims["sub"]))
            self._check_lifetime(claims["iat"], claims["exp"], claims["jti"])
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The bearer token has expired; log in again.") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthorized("The bearer token is not valid.") from exc
        self._remember(token, user_id, float(claims["exp"]))
        return user_id

    def _check_lifetime(self, issued_at: object, expires_at: object, token_id: object) -> None:
        """Only what ``issue`` could have made: a token signed with a leaked or misused key for a century,
        or dated in the future to outlive its ``exp`` check, is refused even though its signature is good."""
        if not isinstance(issued_at, int | float) or not isinstance(expires_at, int | float):
            raise ValueError("iat and exp must be numbers")
        if expires_at - issued_at > self._ttl:
            raise ValueError("the token lives longer than tokens are issued for")
        if issued_at > time.time() + MAX_CLOCK_SKEW_SECONDS:
            raise ValueError("the token was issued in the future")
        if not isinstance(token_id, str) or not token_id:
            raise ValueError("jti must be a non-empty string")

    def _remember(self, token: str, user_id: uuid.UUID, expires_at: float) -> None:
        self._verified[token] = (user_id, expires_at)
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
