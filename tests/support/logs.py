"""What the app logs during a block of a test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from goodnight.config import Environment
from goodnight.logging_setup import build_formatter


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def app_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record of the ``goodnight`` loggers meanwhile, whatever their level of rendering. Enter it
    after ``create_app``, which resets the loggers' handlers."""
    collect = _Collect()
    with _attached(collect):
        yield collect.records


def records_of(records: list[logging.LogRecord], request_id: str) -> list[logging.LogRecord]:
    return [record for record in records if getattr(record, "request_id", None) == request_id]


class _Render(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def rendered_lines(
    env: Environment = Environment.PRODUCTION, *, trace_ids: bool = False
) -> Iterator[list[str]]:
    """Every line of the ``goodnight`` loggers meanwhile, rendered as the process renders it, when it is
    written: inside the request, event and span that wrote it. Enter it after ``create_app``."""
    render = _Render(build_formatter(env, trace_ids=trace_ids))
    with _attached(render):
        yield render.lines


@contextmanager
def _attached(handler: logging.Handler) -> Iterator[None]:
    logger = logging.getLogger("goodnight")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
