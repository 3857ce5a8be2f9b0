"""The rate-limit policies: what each one counts and how much of it is allowed.

Every policy is a ``limits`` string from the settings ("5/minute", several separated by ";"), parsed once at
start-up; a string that does not parse stops the start-up (``config.Settings`` checks with ``parse_limits``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from limits import RateLimitItem, parse_many

if TYPE_CHECKING:
    from goodnight.config import Settings


def parse_limits(text: str) -> tuple[RateLimitItem, ...]:
    """The limits in ``text``; ``ValueError`` when it is not a list of limits that each admit something."""
    items = tuple(parse_many(text))
    if any(item.amount < 1 for item in items):
        raise ValueError("every limit must allow at least one request")
    return items


@dataclass(frozen=True, slots=True)
class Policy:
    """A named set of limits; a request is refused when any of them is used up."""

    name: str
    limits: tuple[RateLimitItem, ...]


@dataclass(frozen=True, slots=True)
class Policies:
    login_ip: Policy  # POST /auth/login, per client address
    login_user: Policy  # failed logins per lower-cased username, whatever the address
    signup: Policy  # POST /users, per client address
    anonymous: Policy  # every other request without a valid token, per client address
    user: Policy  # every request with a valid token, per user id

    @classmethod
    def from_settings(cls, settings: Settings) -> Policies:
        return cls(
            **{name: Policy(name, parse_limits(text)) for name, text in settings.rate_limit_policies.items()}
        )
