"""One renderer for every logger of the process: JSON lines in production, a console in development."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from goodnight.config import Environment
from goodnight.kit.request_context import request_id_var
from goodnight.logging_setup import configure_logging

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
A_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLWFsaWNl"


@pytest.fixture
def production_logging() -> Iterator[None]:
    configure_logging(Environment.PRODUCTION)
    try:
        yield
    finally:
        configure_logging(Environment.DEVELOPMENT)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.usefixtures("production_logging")
def test_every_logger_writes_one_json_line_with_the_same_keys(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("goodnight.access").info(
        "request", extra={"method": "GET", "path": "/api/v1/users/me", "status": 200, "duration_ms": 1.5}
    )
    structlog.get_logger("goodnight.timeline").info("rebuilt", readers=3)
    try:
        raise RuntimeError("first line\nsecond line")
    except RuntimeError:
        logging.getLogger("goodnight.worker").exception("outbox worker error")

    uvicorn_line, request, structured, failure = json_lines(capsys.readouterr().err)
    for line in (uvicorn_line, request, structured, failure):
        assert TIMESTAMP.match(line["timestamp"]), line
        assert list(line)[:4] == ["timestamp", "level", "logger", "message"]
    assert uvicorn_line | {"timestamp": "-"} == {
        "timestamp": "-",
        "level": "info",
        "logger": "uvicorn.error",
        "message": "Started server process [42]",
    }
    assert request["status"] == 200
    assert request["path"] == "/api/v1/users/me"
    assert "user_id" not in request, "unknown fields are left out, not written as null"
    assert structured["readers"] == 3
    assert structured["message"] == "rebuilt"
    assert failure["level"] == "error"
    assert "RuntimeError: first line\nsecond line" in failure["exception"]


def test_python_warnings_are_json_lines_too() -> None:
    """In a process of its own: in this one the test runner takes every warning for itself."""
    program = (
        "import warnings\n"
        "from sqlalchemy.exc import SAWarning\n"
        "from goodnight.config import Environment\n"
        "from goodnight.logging_setup import configure_logging\n"
        "configure_logging(Environment.PRODUCTION)\n"
        "warnings.warn('relationship X will copy column users.id', SAWarning, stacklevel=1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    (warning,) = json_lines(result.stderr)
    assert TIMESTAMP.match(warning["timestamp"])
    assert (warning["level"], warning["logger"]) == ("warning", "py.warnings")
    assert "SAWarning: relationship X will copy column users.id" in warning["message"]


@pytest.mark.usefixtures("production_logging")
def test_a_line_carries_the_request_id_of_the_code_that_wrote_it(capsys: pytest.CaptureFixture[str]) -> None:
    token = request_id_var.set("req-7")
    try:
        logging.getLogger("goodnight.fanout").warning("could not rebuild a timeline")
        logging.getLogger("goodnight.access").info("request", extra={"request_id": "its-own"})
    finally:
        request_id_var.reset(token)
    logging.getLogger("goodnight.fanout").warning("outside any request")

    inside, own, outside = json_lines(capsys.readouterr().err)
    assert inside["request_id"] == "req-7"
    assert own["request_id"] == "its-own"
    assert "request_id" not in outside


@pytest.mark.usefixtures("production_logging")
def test_credentials_never_reach_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("goodnight")
    logger.warning("sent Authorization: Bearer %s", A_JWT)
    logger.warning("decoded %s", A_JWT)
    structlog.get_logger("goodnight").warning("login", password="hunter2-hunter2", authorization="Basic x")
    try:
        raise ValueError(f"bad token {A_JWT}")
    except ValueError:
        logger.exception("failed")

    written = capsys.readouterr().err
    assert A_JWT not in written
    assert "hunter2" not in written
    assert "Basic x" not in written
    bearer, decoded, login, failed = json_lines(written)
    assert bearer["message"] == "sent Authorization: [redacted]"
    assert decoded["message"] == "decoded [redacted]"
    assert (login["password"], login["authorization"]) == ("[redacted]", "[redacted]")
    assert "ValueError: bad token [redacted]" in failed["exception"]


def test_development_is_a_readable_console_without_colours_off_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(Environment.DEVELOPMENT)
    logging.getLogger("goodnight.access").info(
        "request", extra={"method": "GET", "path": "/api/v1/health", "status": 200, "duration_ms": 0.8}
    )

    (line,) = capsys.readouterr().err.splitlines()
    assert not line.startswith("{")
    assert "\x1b[" not in line
    assert "[info     ] request" in line
    assert "method=GET path=/api/v1/health status=200" in line
