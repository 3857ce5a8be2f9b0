"""Revoking tokens: durably in the database, and in every server process's memory within a second.

A logout or a password change writes a ``token_revocations`` row in the request's own transaction, so a 2xx
means it is committed (and a password change and its revocation commit together or not at all). The process
that wrote it applies it to its ``RevocationList`` right after the commit; every other process polls the
table every ``POLL_SECONDS`` for rows past the highest id it has seen, one primary-key range query that finds
nothing in the common case.

**Staleness bound.** A revocation committed at T is refused by every process from T + ``POLL_SECONDS`` + the
time one poll query takes: under a second while the database answers a poll within half a second; by the
process that wrote it, before the response is sent. While a process cannot reach the database it keeps
serving with what it knows (a token revoked meanwhile may work there until the database is back: a
revocation cannot be written while the database is down, so that takes a partial outage), logs once, and
retries every poll.

**Start-up.** A process loads every revocation still in force before it serves. If the database does not
answer then, the process starts anyway and refuses tokens with 503 (``RevocationsUnknown``) until a poll
succeeds: it never accepts a token it cannot check.

**Why the database, with Redis or without.** Redis holds caches here, rebuilt from SQL when it restarts
empty; a revocation must survive that, and a password change must commit together with its revocation. The
database is already that durable, transactional store, and polling it costs two indexed queries a second per
process, on a connection of the process's own.

**Commit order.** Ids are handed out when rows are inserted, not when they commit, so a poll can see id 12
while id 11 is still uncommitted. Ids skipped that way are remembered as *missing* and looked for again by
every poll for ``MISSING_GRACE_SECONDS`` (a rolled-back insert leaves a gap that never fills).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from goodnight.auth import repository
from goodnight.auth.revocation import CLOCK_SKEW_SECONDS, Revocation, RevocationList
from goodnight.auth.tokens import TokenClaims
from goodnight.config import Settings
from goodnight.db import Database, after_commit, is_database_unavailable

logger = logging.getLogger("goodnight.revocations")

POLL_SECONDS = 0.5
# A poll that takes longer than this is abandoned (and retried): the loop must never hang on a dead server.
POLL_TIMEOUT_SECONDS = 5.0
# How long start-up waits for the database before serving with tokens refused until a poll succeeds.
STARTUP_TIMEOUT_SECONDS = 5.0
MISSING_GRACE_SECONDS = 30.0
MAX_MISSING = 1000
# Entries past their expiry leave memory about this often (a pass over all of them).
FORGET_SECONDS = 60.0
# Expired rows are deleted about this often by each process (jittered, so processes do not line up).
CLEANUP_SECONDS = 600.0


class RevocationFeed:
    def __init__(self, settings: Settings, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.revoked = RevocationList()
        # Polls use a connection of their own: a pool that requests keep busy must not delay them past the
        # staleness bound, and they must not take a connection a request is waiting for.
        self._database = Database(settings.model_copy(update={"database_pool_size": 1}))
        self._ttl = settings.jwt_ttl_seconds
        self._poll_seconds = poll_seconds
        self._seen = 0  # the highest id applied
        self._missing: dict[int, float] = {}  # ids below it not seen yet -> when to stop looking (monotonic)
        self._failing = False
        self._next_forget = time.monotonic() + FORGET_SECONDS
        self._next_cleanup = time.monotonic() + _jittered(CLEANUP_SECONDS)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- writing: inside the caller's transaction ----------------------------------------------------------

    def revoke_token(self, session: AsyncSession, claims: TokenClaims) -> None:
        """Refuse this one token (logout) once ``session`` commits, until it would have expired anyway."""
        self._write(session, Revocation(claims.user_id, claims.token_id, None, claims.expires_at))

    def revoke_issued_before(self, session: AsyncSession, user_id: uuid.UUID, before_ms: int) -> None:
        """Refuse every token of the user issued before ``before_ms`` (epoch milliseconds) once ``session``
        commits. Tokens live at most the token lifetime, so after that the entry matches nothing."""
        expires_at = before_ms / 1000 + self._ttl
        self._write(session, Revocation(user_id, None, before_ms, expires_at))

    def _write(self, session: AsyncSession, revocation: Revocation) -> None:
        # Applied here right after the commit of a request's session (``db.session_scope`` runs the hook),
        # before the response is sent; other processes pick the row up at their next poll.
        repository.add(session, revocation)

        async def apply_here() -> None:
            self.revoked.add(revocation)

        after_commit(session, apply_here)

    # --- keeping up ----------------------------------------------------------------------------------------

    @property
    def missing(self) -> frozenset[int]:
        """Ids a poll skipped that may still commit, looked for again by every poll for a while."""
        return frozenset(self._missing)

    async def start(self) -> None:
        """Load what is in force (waiting a bounded time for the database), then poll in the background."""
        await self._sync(within=STARTUP_TIMEOUT_SECONDS)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()  # a poll waiting on a database that does not answer must not delay shutdown
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._database.dispose()

    async def sync(self) -> None:
        """One poll: everything in force until the first one succeeds, then what is new. Errors propagate."""
        async with self._database.reader() as session:
            if self.revoked.loaded:
                floor = self._seen
                rows = await repository.after(session, floor, list(self._missing))
            else:
                newest = await repository.newest_id(session)
                floor = max(0, newest - MAX_MISSING)
                rows = await repository.in_force(session, _utcnow(), up_to=newest, recent_from=floor + 1)
        for _, revocation in rows:
            self.revoked.add(revocation)
        self._advance(floor, [row_id for row_id, _ in rows])
        self.revoked.loaded = True

    def _advance(self, floor: int, ids: list[int]) -> None:
        """Move past the ``ids`` that came back; ids above ``floor`` skipped among them may commit later."""
        now = time.monotonic()
        present = set(ids)
        newest = max(ids, default=floor)
        for row_id in range(max(floor + 1, newest - MAX_MISSING), newest):
            if row_id not in present:
                self._missing.setdefault(row_id, now + MISSING_GRACE_SECONDS)
        self._missing = {
            row_id: until for row_id, until in self._missing.items() if until > now and row_id not in present
        }
        if len(self._missing) > MAX_MISSING:  # keep looking for the newest ones only
            self._missing = dict(sorted(self._missing.items())[-MAX_MISSING:])
        self._seen = max(self._seen, newest)

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._poll_seconds)
            if self._stop.is_set():
                return
            await self._sync(within=POLL_TIMEOUT_SECONDS)
            now = time.monotonic()
            if now >= self._next_forget:
                self._next_forget = now + FORGET_SECONDS
                self.revoked.forget_expired()
            if now >= self._next_cleanup:
                self._next_cleanup = now + _jittered(CLEANUP_SECONDS)
                await self._clean_up()

    async def _sync(self, *, within: float) -> None:
        try:
            async with asyncio.timeout(within):
                await self.sync()
        except Exception as exc:
            self._report(exc)
            return
        if self._failing:
            logger.info("token revocations are in step again")
            self._failing = False

    async def _clean_up(self) -> None:
        before = _utcnow() - timedelta(seconds=CLOCK_SKEW_SECONDS)
        try:
            async with asyncio.timeout(POLL_TIMEOUT_SECONDS), self._database.writer() as session:
                await repository.delete_expired(session, before)
                await session.commit()
        except Exception as exc:
            self._report(exc)

    def _report(self, exc: Exception) -> None:
        if self._failing:
            return  # logged when it started failing; retried every poll meanwhile
        self._failing = True
        if is_database_unavailable(exc) or isinstance(exc, TimeoutError):
            # No traceback: an outage is not a bug, and one line says all there is to say.
            logger.warning(
                "token revocations unreachable (%s); serving with what is known, retrying",
                type(exc).__name__,
            )
        else:
            logger.exception("keeping token revocations in step failed; retrying")


def _jittered(seconds: float) -> float:
    return seconds * random.uniform(0.5, 1.5)  # noqa: S311  (spreading load, not security)


def _utcnow() -> datetime:
    return datetime.now(UTC)
