"""A real ``goodnight serve --workers 2`` in production, exporting traces to an OTLP/HTTP receiver started
here: everything the processes write is JSON lines without a secret, and the spans leave the processes,
a clock-out's fanout in the embedded worker linked to the request that caused it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.api import PASSWORD
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.processes import production_env, serving
from tests.support.redis_server import RedisServer
from tests.support.times import ago, iso

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# Every request line has these; ``user_id`` when the request was authenticated, trace ids when traced.
REQUEST_KEYS = {"request_id", "method", "route", "path", "status", "duration_ms", "client_ip"}
SERVICE = "goodnight-under-test"


@dataclass
class Workload:
    tokens: list[str]
    user_ids: list[str]


def mixed_workload(api_url: str) -> Workload:
    """Register, log in, follow, clock in and out, read the feed, a 404, a 422 and a forged token."""
    with httpx.Client(base_url=api_url, timeout=10.0) as http:
        members = []
        for name in ("alice", "bob"):
            created = http.post("/users", json={"username": name, "password": PASSWORD, "name": name})
            assert created.status_code == 201, created.text
            login = http.post("/auth/login", json={"username": name, "password": PASSWORD})
            assert login.status_code == 200, login.text
            members.append((created.json()["id"], {"Authorization": f"Bearer {login.json()['token']}"}))
        (alice, alice_auth), (bob, bob_auth) = members
        assert http.post(f"/socials/follow/{bob}", headers=alice_auth).status_code == 201
        opened = http.post(
            "/sleep_records/clock_in", json={"clocked_in_at": iso(ago(hours=8))}, headers=bob_auth
        )
        assert opened.status_code == 201, opened.text
        assert http.post("/sleep_records/clock_out", headers=bob_auth).status_code == 200
        assert http.get("/sleep_records/followings", headers=alice_auth).status_code == 200
        assert http.get("/no/such/thing").status_code == 404
        assert http.post("/users", json={"username": "x", "password": 42}).status_code == 422
        forged = {"Authorization": f"Bearer {bob_auth['Authorization'][7:]}x"}
        assert http.get("/users/me", headers=forged).status_code == 401
    tokens = [alice_auth["Authorization"][7:], bob_auth["Authorization"][7:]]
    return Workload(tokens=tokens, user_ids=[alice, bob])


def fanout_linked_to(spans: list[ReceivedSpan], request: Span) -> bool:
    return any(
        received.span.name == "outbox sleep_completed"
        and any(link.span_id == request.span_id for link in received.span.links)
        for received in spans
    )


def server_span(spans: list[ReceivedSpan], name: str) -> Span | None:
    found = [received.span for received in spans if received.span.name == name]
    return found[0] if found else None


def test_production_server_writes_json_lines_only_and_exports_linked_spans(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    workdir = tmp_path / "production"
    workdir.mkdir()
    receiver = OtlpReceiver().start()
    env = production_env(
        GOODNIGHT_REDIS_URL=redis_server.url,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME=SERVICE,
        OTEL_BSP_SCHEDULE_DELAY="100",  # milliseconds between exports, so the test need not wait 5 s
    )
    try:
        with serving(workdir, env, "--workers", "2") as server:
            workload = mixed_workload(server.api_url)
            clock_out_name = "POST /api/v1/sleep_records/clock_out"
            spans = receiver.wait_for(lambda spans: server_span(spans, clock_out_name) is not None)
            clock_out = server_span(spans, clock_out_name)
            assert clock_out is not None
            spans = receiver.wait_for(lambda spans: fanout_linked_to(spans, clock_out))
        log = server.log()
    finally:
        receiver.close()

    lines = [json.loads(line) for line in log.splitlines()]  # every line: a JSON object, or this fails
    for line in lines:
        assert TIMESTAMP.match(line["timestamp"]), line
        assert {"level", "logger", "message"} <= line.keys(), line
    _assert_both_workers_and_the_supervisor_logged(lines)
    _assert_request_lines(lines, workload, clock_out)
    _assert_spans(spans)
    for secret in [PASSWORD, env["GOODNIGHT_JWT_SECRET"], *workload.tokens]:
        assert secret not in log
        assert not [s.span.name for s in spans if secret in str(s.span)]
    assert "Bearer" not in log


def _assert_both_workers_and_the_supervisor_logged(lines: list[dict[str, Any]]) -> None:
    messages = [line["message"] for line in lines if line["logger"] == "uvicorn.error"]
    started = {message for message in messages if message.startswith("Started server process")}
    assert len(started) == 2, messages
    assert any(message.startswith("Started parent process") for message in messages), messages
    assert any(line["message"].startswith("database is at revision") for line in lines)


def _assert_request_lines(lines: list[dict[str, Any]], workload: Workload, clock_out: Span) -> None:
    requests = [line for line in lines if line["logger"] == "goodnight.access"]
    for line in requests:
        assert line.keys() >= REQUEST_KEYS, line
        # Health probes are not traced (and not logged at all but at debug level).
        assert ("trace_id" in line) is ("/health" not in line["path"]), line
    assert {200, 201, 401, 404, 422} <= {line["status"] for line in requests}
    (feed,) = [line for line in requests if line["path"] == "/api/v1/sleep_records/followings"]
    assert feed["user_id"] == workload.user_ids[0]
    (clocked_out,) = [line for line in requests if line["path"] == "/api/v1/sleep_records/clock_out"]
    assert clocked_out["trace_id"] == clock_out.trace_id.hex()
    assert clocked_out["span_id"] == clock_out.span_id.hex()


def _assert_spans(spans: list[ReceivedSpan]) -> None:
    assert {received.service_name for received in spans} == {SERVICE}
    systems = {received.attribute("db.system") for received in spans}
    assert {"sqlite", "redis"} <= systems, systems
    assert not [received for received in spans if "health" in received.span.name]
