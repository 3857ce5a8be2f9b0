"""Logging: every logger of the process (ours, uvicorn's, SQLAlchemy's, warnings) through one renderer.

Production writes one JSON object per line; development a readable console, coloured on a terminal. Code
logs with the standard library (``logging.getLogger``) or with structlog; both end in structlog's
``ProcessorFormatter`` on one root handler, so a library's line looks like ours.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from goodnight.config import Environment
from goodnight.kit.request_context import request_id_var

# The ``extra`` fields a line may carry: the request line's, and the outbox worker's. An allowlist, so a
# library passing something unexpected in ``extra`` (a header, a body) never reaches the log.
LOGGED_FIELDS = (
    "request_id",
    "method",
    "route",
    "path",
    "status",
    "duration_ms",
    "client_ip",
    "user_id",
    "event_id",
    "event_kind",
)
# Levels for the loggers of the libraries we run; the root logger stays at WARNING for everything else
# (SQLAlchemy logs every statement at INFO, for instance).
LOGGER_LEVELS = {
    "goodnight": logging.INFO,
    "uvicorn": logging.INFO,
    "uvicorn.error": logging.INFO,
    "alembic": logging.WARNING,
    "sqlalchemy": logging.WARNING,
    "asyncio": logging.WARNING,
    "py.warnings": logging.WARNING,
}
# Keys whose values are never written, whoever logs them.
SECRET_KEY_PARTS = ("authorization", "password", "passwd", "token", "secret", "cookie")
REDACTED = "[redacted]"
# Credentials that may hide inside a message or a traceback: a bearer header's value, a JWT.
_SECRET_TEXT = re.compile(r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]+|eyJ[\w-]*\.[\w-]+\.[\w-]*")
# The head of a JSON line, in this order; the rest follow as logged.
_HEAD_KEYS = ("timestamp", "level", "logger", "message")
# What ProcessorFormatter adds for its processors, never written.
_BOOKKEEPING = frozenset({"_record", "_from_structlog"})


def add_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """UTC ISO 8601 with milliseconds and ``Z``, taken when the record was made (not when it is written)."""
    record: logging.LogRecord | None = event_dict.get("_record")
    created = record.created if record is not None else time.time()
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    event_dict["timestamp"] = f"{seconds}.{int(created * 1000) % 1000:03d}Z"
    return event_dict


def add_request_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The id of the request (or the outbox event's request) this code runs for, when the line has none."""
    if event_dict.get("request_id") is None:
        request_id = request_id_var.get()
        if request_id is not None:
            event_dict["request_id"] = request_id
    return event_dict


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The trace and span a line was written in, to find it from a trace (installed only with tracing).

    Sampled rather than recording: the request line is written just after the server span has ended (it
    ends with the last byte of the response), and that line above all must name its trace.
    """
    context = trace.get_current_span().get_span_context()
    if context.is_valid and context.trace_flags.sampled:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
        event_dict["span_id"] = trace.format_span_id(context.span_id)
    return event_dict


@functools.cache
def _names_a_secret(key: str) -> bool:
    # Cached: a process logs a few dozen distinct keys, and this runs for each key of each line.
    return any(part in key.lower() for part in SECRET_KEY_PARTS)


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Belt and braces: nothing logs credentials on purpose, and this keeps it so if something does."""
    for key, value in event_dict.items():
        if _names_a_secret(key):
            event_dict[key] = REDACTED
        elif type(value) is str and ("eyJ" in value or "earer" in value):
            event_dict[key] = _SECRET_TEXT.sub(REDACTED, value)
    return event_dict


def _json_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The line's fields as written: the head keys first, ``event`` as ``message``, structlog's bookkeeping
    dropped, and fields that are not known (``user_id`` of an anonymous request) left out. One step rather
    than structlog's three: this runs for every request."""
    event_dict["message"] = event_dict.pop("event", None)
    fields = {key: event_dict.pop(key) for key in _HEAD_KEYS if key in event_dict}
    for key, value in event_dict.items():
        if value is not None and key not in _BOOKKEEPING:
            fields[key] = value
    return fields


def _drop_unknown(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return {key: value for key, value in event_dict.items() if value is not None}


def _dumps(value: Any, **_: Any) -> str:
    # ``str`` for what JSON cannot hold (a UUID, a datetime) rather than failing to log the line at all.
    return orjson.dumps(value, default=str).decode()


def shared_processors(*, trace_ids: bool) -> list[Processor]:
    """What every line gets, from the standard library or from structlog, before it is rendered."""
    processors: list[Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(allow=LOGGED_FIELDS),
        add_request_id,
        add_timestamp,
    ]
    if trace_ids:
        processors.append(add_trace_ids)
    return processors


def build_formatter(env: Environment, *, trace_ids: bool = False) -> logging.Formatter:
    """The one formatter: JSON lines in production, a readable console in development."""
    rendering: list[Processor]
    if env is Environment.PRODUCTION:
        rendering = [
            structlog.processors.format_exc_info,
            redact_secrets,
            _json_fields,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    else:
        rendering = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact_secrets,
            _drop_unknown,
            # Plain tracebacks: rich's would print local variables, passwords among them.
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors(trace_ids=trace_ids), processors=rendering
    )


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is written, as logging's last-resort handler does:
    a handler set up once keeps working when stderr is redirected later (test runners swap it per test)."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # under the handler's lock: ``handle`` holds it around ``emit``
        super().emit(record)


def root_handler(env: str | Environment, trace_ids: bool = False) -> logging.Handler:
    """The handler every logger ends in (also named by ``uvicorn_log_config``, for uvicorn's processes)."""
    return StderrHandler(build_formatter(Environment(env), trace_ids=trace_ids))


def configure_logging(env: Environment, *, trace_ids: bool = False) -> None:
    """Route every logger of this process to one handler on the root logger (idempotent).

    Handlers on the root logger that are not ours (a test runner's capture) are kept.
    """
    root = logging.getLogger()
    root.handlers[:] = [handler for handler in root.handlers if not isinstance(handler, StderrHandler)]
    root.addHandler(root_handler(env, trace_ids))
    root.setLevel(logging.WARNING)
    for name, level in LOGGER_LEVELS.items():
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(level)
        logger.propagate = True
    _silence_uvicorn_access_log()
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            *shared_processors(trace_ids=trace_ids),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _silence_uvicorn_access_log() -> None:
    # Our own request line (goodnight.access) says more, and redacts; uvicorn's would repeat it.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.setLevel(logging.WARNING)


def uvicorn_log_config(env: Environment) -> dict[str, Any]:
    """The same set-up as ``configure_logging``, as the ``dictConfig`` uvicorn applies in its supervisor
    and in each worker process it starts, before it imports the app."""
    loggers: MutableMapping[str, dict[str, Any]] = {
        name: {"level": logging.getLevelName(level), "handlers": [], "propagate": True}
        for name, level in LOGGER_LEVELS.items()
    }
    loggers["uvicorn.access"] = {"level": "WARNING", "handlers": [], "propagate": False}
    factory: Callable[..., logging.Handler] = root_handler
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"goodnight": {"()": f"{factory.__module__}.{factory.__qualname__}", "env": env.value}},
        "root": {"level": "WARNING", "handlers": ["goodnight"]},
        "loggers": dict(loggers),
    }
