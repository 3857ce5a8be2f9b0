"""The metrics of a ``goodnight worker`` process: outbox and pool gauges sampled, ``/metrics`` served."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from goodnight.config import Settings
from goodnight.db import Database
from goodnight.observability.access import MetricsAccess
from goodnight.observability.lifecycle import ProcessMetrics
from goodnight.observability.metrics_server import serving_metrics


@contextlib.asynccontextmanager
async def worker_metrics(
    settings: Settings, database: Database, address: tuple[str, int] | None
) -> AsyncIterator[None]:
    """While the block runs: with an ``address`` (host, port) to serve them on, the metrics; else nothing
    (nobody could read them)."""
    if address is None:
        yield
        return
    sampling = ProcessMetrics.start(settings, database, outbox=True)
    try:
        async with serving_metrics(MetricsAccess.from_settings(settings), *address):
            yield
    finally:
        await sampling.stop()
