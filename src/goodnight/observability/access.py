"""Who may read the metrics: whoever shows the token, or, without one configured, this machine only.

The metrics say a lot about a deployment (its routes, its load, its backlog) and ``/metrics`` is never rate
limited, so the rule is strict. With ``GOODNIGHT_METRICS_TOKEN`` set, a request needs
``Authorization: Bearer <token>`` (401 otherwise), from anywhere. Without it, only a loopback peer is answered
(403 otherwise), and only when the request did not come through a proxy: a reverse proxy on the same machine
connects from loopback on behalf of anyone, and says so in a forwarding header. (A proxy that adds no such
header cannot be told apart: behind one, set a token, or do not route /metrics through it.)
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from goodnight.config import Settings
from goodnight.errors import GoodnightError
from goodnight.ratelimit.client_ip import parse_address
from goodnight.ratelimit.middleware import bearer_token

Headers = Iterable[tuple[bytes, bytes]]
FORWARDING_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip"})


class MetricsUnauthorized(GoodnightError):
    status_code = 401
    code = "unauthorized"
    default_message = "The metrics require an 'Authorization: Bearer <GOODNIGHT_METRICS_TOKEN>' header."

    def __init__(self) -> None:
        super().__init__(headers={"WWW-Authenticate": "Bearer"})


class MetricsForbidden(GoodnightError):
    status_code = 403
    code = "forbidden"
    default_message = (
        "Without GOODNIGHT_METRICS_TOKEN the metrics are served to this machine only (loopback, no proxy)."
    )


def is_loopback(peer: str | None) -> bool:
    address = parse_address(peer) if peer else None
    return address is not None and address.is_loopback


@dataclass(frozen=True, slots=True)
class MetricsAccess:
    token: bytes | None

    @classmethod
    def from_settings(cls, settings: Settings) -> MetricsAccess:
        token = settings.metrics_token
        return cls(None if token is None else token.get_secret_value().encode())

    def check(self, headers: Headers, peer: str | None) -> None:
        """Raises the refusal for a request with these headers from this socket peer."""
        headers = list(headers)
        if self.token is not None:
            given = bearer_token({"headers": headers})
            # Compared in constant time, so the answer's timing says nothing about how much of it was right.
            if given is None or not hmac.compare_digest(given.encode("latin-1"), self.token):
                raise MetricsUnauthorized()
            return
        if not is_loopback(peer) or any(name in FORWARDING_HEADERS for name, _ in headers):
            raise MetricsForbidden()
