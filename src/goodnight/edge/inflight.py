"""A per-process cap on requests in flight: beyond it, 503 ``overloaded`` at once instead of a queue.

Without a cap an overloaded process accepts everything and every request gets slower: each one waits for
the database pool, the hash gate and the CPU behind all the others, until clients time out on answers that
were computed anyway. A refusal costs well under a millisecond and tells the client when to come back, so
the requests that are admitted keep their normal latency.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from goodnight.errors import Overloaded, retry_after, send_error

# A refused request did no work, and the requests ahead of it finish within a second or so.
OVERLOADED_RETRY_AFTER_SECONDS = 1


class InFlightCap:
    """Admits at most ``limit`` HTTP requests at once, except those to ``exempt_paths``.

    One counter per process, touched only from its event loop, so a plain integer is enough.
    """

    def __init__(self, app: ASGIApp, *, limit: int, exempt_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt_paths = frozenset(exempt_paths)
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            error = Overloaded(headers=retry_after(OVERLOADED_RETRY_AFTER_SECONDS))
            await send_error(scope, receive, send, error)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
