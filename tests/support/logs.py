"""What the app logs during a block of a test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def app_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record of the ``goodnight`` loggers meanwhile (they do not propagate to the root logger, so
    pytest's caplog misses them). Enter it after ``create_app``, which replaces the loggers' handlers."""
    collect = _Collect()
    logger = logging.getLogger("goodnight")
    logger.addHandler(collect)
    try:
        yield collect.records
    finally:
        logger.removeHandler(collect)


def records_of(records: list[logging.LogRecord], request_id: str) -> list[logging.LogRecord]:
    return [record for record in records if getattr(record, "request_id", None) == request_id]
