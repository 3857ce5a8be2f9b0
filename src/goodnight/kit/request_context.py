"""What the code running for one request (or one outbox event) knows about it, for logs and traces.

A context variable rather than an argument: log lines are written deep inside services and libraries that
never see the request, and asyncio copies the context into every task the request starts.
"""

from __future__ import annotations

from contextvars import ContextVar

# The id of the request being served, or of the request that wrote the outbox event being applied.
request_id_var: ContextVar[str | None] = ContextVar("goodnight_request_id", default=None)
