"""Whether Redis timelines are caught up with the outbox, so a page may be served from them.

Nothing is served from Redis while the oldest unapplied outbox event is older than the allowed lag, nor
after a Redis failure until a check confirms the outbox is caught up (writes made meanwhile wait there, and
a timeline that survived the failure does not have them). The check is one SQL query, made at most twice a
second per process, by one request; the others meanwhile go by the last answer.

While the database is unreachable the check cannot be made, and the last answer stands (see
``CatchUp._unanswered``): warm feeds keep being served from Redis through a database outage.
"""

from __future__ import annotations

import logging
import time

from goodnight.db import Database, is_database_unavailable
from goodnight.jobs import outbox

logger = logging.getLogger("goodnight.timeline")
RECHECK_SECONDS = 0.5
# The last answer is trusted through an outage only if the database gave it this recently before the
# outage was first noticed. An older one (a process that served no feed for a while) says nothing about
# the backlog at the moment the database went away.
LAST_ANSWER_TRUSTED_SECONDS = 5.0


class CatchUp:
    def __init__(self, database: Database, max_lag_seconds: float) -> None:
        self.database = database
        self.max_lag = max_lag_seconds
        self._caught_up = False  # never checked: unknown, so not caught up
        self._answered_at: float | None = None  # when the database last answered the check
        self._database_away = False  # the last check could not reach the database
        self._suspect = False  # a Redis failure since the last confirmation
        self._failures = 0
        self._recheck_at = 0.0
        self._checking = False

    @property
    def database_away(self) -> bool:
        return self._database_away

    def redis_failed(self) -> None:
        self._suspect = True
        self._failures += 1

    async def allows(self) -> bool:
        """True when no outbox event has waited longer than the allowed lag, as far as is known."""
        now = time.monotonic()
        # After a Redis failure, check at once, unless the database just failed a check: then on the
        # period, like any other, so an outage costs one failed query per period, not one per page.
        due = now >= self._recheck_at or (self._suspect and not self._database_away)
        if due and not self._checking:
            await self._check()
        return self._caught_up and not self._suspect

    async def _check(self) -> None:
        self._checking = True
        failures = self._failures
        try:
            async with self.database.reader() as session:
                age = await outbox.oldest_pending_age(session)
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            self._unanswered(exc)
        else:
            self._answered(age, failures)
        finally:
            self._recheck_at = time.monotonic() + RECHECK_SECONDS
            self._checking = False

    def _answered(self, age: float | None, failures: int) -> None:
        if self._database_away:
            logger.info("database reachable again: the outbox lag is checked again")
        self._database_away = False
        self._answered_at = time.monotonic()
        self._caught_up = age is None or age <= self.max_lag
        if failures == self._failures:  # a Redis failure during the check needs a check of its own
            self._suspect = self._suspect and not self._caught_up

    def _unanswered(self, exc: Exception) -> None:
        """Keep the last answer through the outage, if it is recent enough; never check once per page.

        Why the last answer may stand, without expiring: while the database is down no write can commit,
        so no new outbox event can appear and the backlog cannot grow. What a timeline may lack is frozen
        at the events pending when the database went away: those the last check saw, none older than the
        allowed lag, and those committed since (seconds' worth at most, see LAST_ANSWER_TRUSTED_SECONDS).
        They are the writes of the last moments before the outage, the very ones a page served just before
        it could lack too. They stay pending (the worker needs the database as well), so their age keeps
        growing; letting it expire the answer would turn every outage that begins while a clock-out is
        being fanned out into 503s for every feed, when the SQL path cannot answer at all. We serve them
        late instead: they appear once the database is back and the outbox replays. (If only this process
        lost the database, the others keep writing and their workers keep the timelines current.)

        A backlog seen at the last check stays a backlog (the timelines are behind: SQL answers, 503);
        a process that never got an answer, or whose answer was already old when the outage began, cannot
        judge and declines likewise.
        """
        if self._database_away:
            return  # judged when the outage was first noticed
        self._database_away = True
        recent = (
            self._answered_at is not None
            and time.monotonic() - self._answered_at <= LAST_ANSWER_TRUSTED_SECONDS
        )
        self._caught_up = self._caught_up and recent
        verdict = "serving warm timelines from Redis" if self._caught_up else "feeds need the database"
        logger.warning(
            "database unreachable, outbox lag unknown; %s: %s: %s", verdict, type(exc).__name__, exc
        )
