"""The text Prometheus scrapes: this process's metrics, or every worker's added up."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

from goodnight.observability.multiprocess import is_multiprocess

# The classic text format: every Prometheus release reads it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def exposition() -> bytes:
    """Reads every worker's files in multiprocess mode (a few milliseconds: run it off the event loop)."""
    if not is_multiprocess():
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
