"""Fast lanes: the most frequent reads served without FastAPI's per-request machinery.

FastAPI resolves dependencies, validates parameters and validates the returned model on every request:
for a read that is otherwise a token check and one query, that is most of its cost. A fast lane serves the
*ordinary* request of a declared route — a valid token, parameters that are plainly valid — by calling the
same code the route calls. Anything else (no token, a parameter to refuse, a path the lane does not know)
falls through to the router, so errors, the OpenAPI document and every rule stay the declared route's.

The lanes sit inside the app's exception handling (around the router itself), so an error a lane's code
raises is answered exactly as the route's would be, and inside all middleware (limits, metrics, logs).
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

# What a lane does with an ordinary request, or None to leave the request to the declared route.
LaneHandler = Callable[[Request], Awaitable[Response | None]]


class _Declined(enum.Enum):
    DECLINED = "declined"


# A parameter the lane will not judge: the declared route validates it (and refuses it, if it must).
DECLINED: Final = _Declined.DECLINED
Declined = Literal[_Declined.DECLINED]


def _single(query: QueryParams, name: str) -> str | Declined | None:
    values = query.getlist(name)
    if not values:
        return None
    return values[0] if len(values) == 1 else DECLINED


def plain_int(query: QueryParams, name: str, highest: int, *, lowest: int = 0) -> int | Declined | None:
    """A query parameter written as plain ASCII digits within ``lowest..highest``, None when absent;
    anything else (a sign, spaces, other digits, a repeat) is the declared route's to judge."""
    raw = _single(query, name)
    if raw is None or raw is DECLINED:
        return raw
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(highest)):
        return DECLINED
    value = int(raw)
    return value if lowest <= value <= highest else DECLINED


def plain_text(query: QueryParams, name: str, longest: int) -> str | Declined | None:
    """A query parameter of 1..``longest`` characters, None when absent."""
    raw = _single(query, name)
    if raw is None or raw is DECLINED:
        return raw
    return raw if 0 < len(raw) <= longest else DECLINED


@dataclass(frozen=True)
class FastLane:
    """``GET`` of a declared route's path template (relative to its router, like the route's own), and
    what serves its ordinary requests."""

    path: str
    handler: LaneHandler
    pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pattern, _, _ = compile_path(self.path)
        object.__setattr__(self, "pattern", pattern)

    def under(self, prefix: str) -> FastLane:
        return FastLane(prefix + self.path, self.handler)


class FastLanes:
    """Wraps the router: a ``GET`` whose path matches a lane's template is offered to that lane first."""

    def __init__(self, app: ASGIApp, lanes: Sequence[FastLane]) -> None:
        self.app = app
        self._exact = {lane.path: lane for lane in lanes if "{" not in lane.path}
        self._templated = [lane for lane in lanes if "{" in lane.path]
        self.served: Counter[str] = Counter()  # requests each lane answered, by template

    def _lane_for(self, path: str) -> tuple[FastLane, dict[str, str]] | None:
        exact = self._exact.get(path)
        if exact is not None:
            return exact, {}
        for lane in self._templated:
            match = lane.pattern.match(path)
            if match is not None:
                return lane, match.groupdict()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_get = scope["type"] == "http" and scope["method"] == "GET"
        found = self._lane_for(scope["path"]) if is_get else None
        if found is not None:
            lane, path_params = found
            # What routing records, for the handler and for the metrics and the request log (which name the
            # template); the router sets both again if the lane declines.
            scope["path_params"] = path_params
            scope["route"] = lane
            try:
                response = await lane.handler(Request(scope, receive))
            except Exception:
                self.served[lane.path] += 1  # answered by the app's error handlers, as the route's would be
                raise
            if response is not None:
                self.served[lane.path] += 1
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
