"""Logging failures of background work without burying the log during an outage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# An outage fails every background attempt while it lasts; one line per this many seconds says enough.
QUIET_SECONDS = 60.0


class BackgroundFailures:
    """Logs failed background work: a bug with its traceback every time; an outage (what ``is_outage``
    recognises: a service that cannot be reached) as one warning line at most once per ``quiet_seconds``
    (the work is retried all the while, and a traceback per attempt would bury everything else)."""

    def __init__(
        self,
        logger: logging.Logger,
        is_outage: Callable[[BaseException], bool],
        quiet_seconds: float = QUIET_SECONDS,
    ) -> None:
        self._logger = logger
        self._is_outage = is_outage
        self._quiet_seconds = quiet_seconds
        self._quiet_until = 0.0

    def report(self, exc: BaseException, message: str, *args: object) -> None:
        if not self._is_outage(exc):
            self._logger.error(message, *args, exc_info=exc)
            return
        now = time.monotonic()
        if now < self._quiet_until:
            return
        self._quiet_until = now + self._quiet_seconds
        self._logger.warning(
            f"{message}: %s: %s (a service is unreachable; such failures are not logged again for %.0f s)",
            *args,
            type(exc).__name__,
            exc,
            self._quiet_seconds,
        )
