"""Logging: one line per request, JSON in production, readable in development."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from goodnight.config import Environment

REQUEST_FIELDS = ("method", "path", "status", "duration_ms", "request_id", "user_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in REQUEST_FIELDS:
            if hasattr(record, field):
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class ReadableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if hasattr(record, "status"):
            user = getattr(record, "user_id", None) or "-"
            fields = record.__dict__
            line = (
                f"{self.formatTime(record, '%H:%M:%S')} {fields['method']} {fields['path']} -> "
                f"{fields['status']} {fields['duration_ms']}ms user={user} id={fields['request_id']}"
            )
        else:
            line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname.lower()} {record.name}: "
            line += record.getMessage()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(env: Environment) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if env is Environment.PRODUCTION else ReadableFormatter())
    root = logging.getLogger("goodnight")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
