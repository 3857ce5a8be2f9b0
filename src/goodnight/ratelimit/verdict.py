"""A policy's answer to one request, and the headers that tell the client where it stands.

The headers are those of the IETF draft "RateLimit header fields for HTTP": ``RateLimit-Limit`` (requests per
window), ``RateLimit-Remaining`` and ``RateLimit-Reset`` (whole seconds until the oldest request counted
leaves the window, freeing a slot: a moving window never resets all at once). A refusal adds ``Retry-After``,
the same number of seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from limits.util import WindowStats

from goodnight.errors import retry_after

RawHeaders = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class WindowState:
    """One limit of a policy after this request: whether it let the request in, and what is left."""

    limit: int
    admitted: bool
    stats: WindowStats


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    headers: RawHeaders

    @classmethod
    def of(cls, states: Iterable[WindowState]) -> Verdict:
        """Allowed when every limit admitted the request. The headers describe the limit that refused it,
        or, when none did, the one closest to running out."""
        ordered = list(states)
        refused = [state for state in ordered if not state.admitted]
        if refused:
            decisive = max(refused, key=lambda state: state.stats.reset_time)
        else:
            decisive = min(ordered, key=lambda state: (state.stats.remaining, -state.stats.reset_time))
        return cls(not refused, _headers(decisive, refused=bool(refused)))

    def header_dict(self) -> dict[str, str]:
        return {name.decode(): value.decode() for name, value in self.headers}


# Policies switched off answer with this: no counting, no headers.
UNLIMITED = Verdict(True, [])


def _headers(state: WindowState, *, refused: bool) -> RawHeaders:
    seconds_left = state.stats.reset_time - time.time()
    if refused:
        # A refusal never says "try again now"; Retry-After and RateLimit-Reset agree.
        wait = retry_after(seconds_left)["Retry-After"].encode()
        return [
            (b"ratelimit-limit", str(state.limit).encode()),
            (b"ratelimit-remaining", b"0"),
            (b"ratelimit-reset", wait),
            (b"retry-after", wait),
        ]
    return [
        (b"ratelimit-limit", str(state.limit).encode()),
        (b"ratelimit-remaining", str(max(0, state.stats.remaining)).encode()),
        (b"ratelimit-reset", str(max(0, math.ceil(seconds_left))).encode()),
    ]
