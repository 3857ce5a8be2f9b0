"""HS256 bearer tokens.

Verification results are cached per token string until the token expires: the signature check dominates the
cost of small authenticated reads. A cached token is still checked against the in-memory revocation list on
every use (``auth.revocation``), which costs two dictionary look-ups and no query.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from goodnight.auth.revocation import RevocationList
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


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says."""

    user_id: uuid.UUID
    token_id: str
    # Milliseconds, finer than ``iat``: a password change revokes the tokens issued before it, and the token
    # a client gets by logging in again a moment later, within the same second, must not be one of them.
    issued_at_ms: int
    expires_at: float


def issued_at_ms(token_id: str, issued_at: int | float) -> int:
    """When a token was issued, to the millisecond.

    ``issue`` makes ``jti`` a UUIDv7, whose first 48 bits are that moment in milliseconds; any other ``jti``
    counts as issued at the start of its ``iat`` second, the earliest it can have been, so a cutoff errs
    towards refusing it.
    """
    earliest = int(issued_at) * 1000
    try:
        token_uuid = uuid.UUID(hex=token_id)
    except ValueError:
        return earliest
    if token_uuid.version != 7:
        return earliest
    embedded = token_uuid.int >> 80
    return embedded if earliest <= embedded < earliest + 1000 else earliest


class Tokens:
    def __init__(self, secret: str, ttl_seconds: int, revocations: RevocationList | None = None) -> None:
        self._secret = secret
        self._ttl = ttl_seconds
        # Without a list (tools that only issue tokens), nothing is revoked.
        self._revocations = revocations if revocations is not None else RevocationList(loaded=True)
        self._verified: OrderedDict[str, TokenClaims] = OrderedDict()

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    def issue(self, user_id: uuid.UUID, token_id: uuid.UUID | None = None) -> IssuedToken:
        """A token for the user. ``token_id``, a UUIDv7 from ``new_id()``, dates it to the moment that id was
        made (a login makes it when it reads the password hash it checks)."""
        token_id = token_id or new_id()
        # Both times come from the id's own clock reading, so ``issued_at_ms`` finds it again exactly.
        now = (token_id.int >> 80) // 1000
        claims = {"sub": str(user_id), "iat": now, "exp": now + self._ttl, "jti": token_id.hex}
        return IssuedToken(jwt.encode(claims, self._secret, algorithm=ALGORITHM), self._ttl)

    def verify(self, token: str) -> uuid.UUID:
        """The user id a valid, unrevoked token was issued to; 401 for anything else."""
        return self.verify_claims(token).user_id

    def verify_claims(self, token: str) -> TokenClaims:
        """The claims of a valid, unrevoked token; 401 for anything else (503 ``RevocationsUnknown`` while
        this process has not yet loaded the revocations)."""
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() < cached.expires_at:
                self._revocations.check(cached)
                return cached
            self._verified.pop(token, None)
        claims = self._decode(token)
        self._revocations.check(claims)
        self._remember(token, claims)
        return claims

    def _decode(self, token: str) -> TokenClaims:
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("The bearer token is not valid.")
        try:
            # Pinning the algorithm list is what rejects 'alg: none' and algorithm-confusion tokens.
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options={"require": REQUIRED_CLAIMS}
            )
            user_id = uuid.UUID(str(claims["sub"]))
            issued_at, expires_at, token_id = claims["iat"], claims["exp"], claims["jti"]
            self._check_lifetime(issued_at, expires_at, token_id)
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The bearer token has expired; log in again.") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthorized("The bearer token is not valid.") from exc
        return TokenClaims(user_id, token_id, issued_at_ms(token_id, issued_at), float(expires_at))

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

    def _remember(self, token: str, claims: TokenClaims) -> None:
        self._verified[token] = claims
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
