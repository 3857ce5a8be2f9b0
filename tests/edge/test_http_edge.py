"""The HTTP edge of a real ``goodnight serve --workers 2``, over raw sockets: request heads over 16 KiB or 100
fields are refused with 431, a head that is not complete 10 s after it started is dropped (slowloris), an idle
keep-alive connection is closed after 5 s, and keep-alive, pipelining and bodies still work.

Every timing bound here is generous on purpose: these tests show which limit closes a connection, not how
precisely; the figures under attack come from ``bench/edge_attack.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from goodnight.edge.protocol import (
    HEAD_TIMEOUT_SECONDS,
    KEEP_ALIVE_TIMEOUT_SECONDS,
    MAX_HEAD_BYTES,
    MAX_HEADER_FIELDS,
    GuardedHttpToolsProtocol,
)
from tests.support.api import PASSWORD
from tests.support.envelope import assert_error
from tests.support.processes import Server, clean_env, serving

HEALTH = "/api/v1/health"
REQUEST_LINE = f"GET {HEALTH} HTTP/1.1\r\n".encode()
HOST = b"Host: 127.0.0.1\r\n"
SIMPLE_GET = REQUEST_LINE + HOST + b"\r\n"
# Closed by the head deadline: not before it (timers do not fire early), and well within twice it.
DEADLINE_WINDOW = (HEAD_TIMEOUT_SECONDS - 1, 2 * HEAD_TIMEOUT_SECONDS)
# Closed by the keep-alive timeout: after it, and before the head deadline would have done it.
KEEP_ALIVE_WINDOW = (KEEP_ALIVE_TIMEOUT_SECONDS - 1, HEAD_TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir: Path = tmp_path_factory.mktemp("edge")
    with serving(workdir, clean_env(), "--workers", "2") as running:
        yield running


def head_of(size: int, fields: int, request_line: bytes = REQUEST_LINE) -> bytes:
    """A complete request head of exactly ``size`` bytes carrying ``fields`` header fields, Host first."""
    padding = [b"X-Pad-%03d: " % index for index in range(fields - 1)]
    bare = len(request_line) + len(HOST) + sum(len(name) + 2 for name in padding) + 2
    spare = size - bare
    assert spare >= len(padding), f"{size} bytes cannot hold {fields} fields"
    values = [b"v" * (spare // len(padding))] * len(padding)
    values[-1] += b"v" * (spare % len(padding))
    head = (
        request_line
        + HOST
        + b"".join(name + value + b"\r\n" for name, value in zip(padding, values, strict=True))
    )
    head += b"\r\n"
    assert len(head) == size
    return head


class RawClient:
    """One connection that sends exactly the bytes it is given and reads responses with Content-Length."""

    def __init__(self, server: Server, timeout: float = 3 * HEAD_TIMEOUT_SECONDS) -> None:
        self.url = server.base_url
        self.socket = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        self.reader = self.socket.makefile("rb")

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.reader.close()
        self.socket.close()

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def response(self) -> httpx.Response:
        status_line = self.reader.readline()
        assert status_line, "the server closed the connection instead of answering"
        headers = []
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        body = self.reader.read(int(dict(headers)["content-length"]))
        request = httpx.Request("GET", self.url)
        return httpx.Response(int(status_line.split()[1]), headers=headers, content=body, request=request)

    def is_closed_by_server(self) -> bool:
        """Waits for the server to close the connection (True), or for the timeout (False)."""
        try:
            return self.reader.read(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def seconds_until_closed(self, since: float) -> float:
        assert self.is_closed_by_server(), "the server kept the connection open"
        return time.monotonic() - since


def assert_head_refused(response: httpx.Response) -> None:
    assert_error(response, 431, "request_header_fields_too_large")
    assert response.headers["connection"] == "close"
    assert response.headers["x-content-type-options"] == "nosniff"


def assert_healthy(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


# --- the protocol still fits the uvicorn it runs on ---


async def no_app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("never called")


def test_uvicorn_still_offers_what_the_protocol_builds_on() -> None:
    """uvicorn's protocol classes are not a stable API. An upgrade that renames a callback or attribute the
    protocol uses fails here by name, before the behaviour tests below fail in more puzzling ways."""
    overridden = [
        "connection_made",
        "connection_lost",
        "data_received",
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "on_response_complete",
    ]
    for name in overridden:
        assert callable(getattr(HttpToolsProtocol, name, None)), (
            f"uvicorn's protocol has no {name}() any more"
        )
        assert name in vars(GuardedHttpToolsProtocol), name
    config = uvicorn.Config(no_app)
    config.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = GuardedHttpToolsProtocol(config, ServerState(), {}, _loop=loop)
        for attribute in ("parser", "transport", "cycle", "pipeline", "loop", "server_state", "flow"):
            assert hasattr(protocol, attribute), f"uvicorn's protocol has no .{attribute} any more"
        assert protocol.loop is loop
        assert callable(protocol.parser.get_method)
    finally:
        loop.close()


# --- limits on the head ---


def test_100_fields_in_exactly_16_kib_are_answered(server: Server) -> None:
    with RawClient(server) as client:
        client.send(head_of(MAX_HEAD_BYTES, MAX_HEADER_FIELDS))
        assert_healthy(client.response())


def test_101_header_fields_are_refused(server: Server) -> None:
    with RawClient(server) as client:
        client.send(head_of(2048, MAX_HEADER_FIELDS + 1))
        refused = client.response()
        assert_head_refused(refused)
        assert "100 header fields" in refused.json()["error"]["message"]
        assert client.is_closed_by_server()


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(head_of(MAX_HEAD_BYTES + 1, 2), id="one-byte-over"),
        pytest.param(head_of(17 * 1024, 50), id="17-kib-in-50-fields"),
        pytest.param(
            b"GET /api/v1/health?q=" + b"q" * MAX_HEAD_BYTES + b" HTTP/1.1\r\n" + HOST + b"\r\n",
            id="long-url",
        ),
        pytest.param(head_of(1024 * 1024, 2), id="1-mb-header"),
    ],
)
def test_a_head_over_16_kib_is_refused(server: Server, head: bytes) -> None:
    with RawClient(server) as client:
        # The server stops reading at the limit, so the rest of a large head may never be taken.
        threading.Thread(target=send_ignoring_reset, args=(client, head), daemon=True).start()
        refused = client.response()
        assert_head_refused(refused)
        assert f"{MAX_HEAD_BYTES} bytes" in refused.json()["error"]["message"]
        assert client.is_closed_by_server()


def send_ignoring_reset(client: RawClient, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server refused and closed before taking it all
        client.send(data)


def test_a_header_that_never_ends_is_refused_at_the_limit_not_at_the_deadline(server: Server) -> None:
    with RawClient(server) as client:
        started = time.monotonic()
        endless = REQUEST_LINE + HOST + b"X-Endless: " + b"a" * (1024 * 1024)  # and no end of line
        threading.Thread(target=send_ignoring_reset, args=(client, endless), daemon=True).start()
        assert_head_refused(client.response())
        assert time.monotonic() - started < HEAD_TIMEOUT_SECONDS
        assert client.is_closed_by_server()


def test_a_trailer_that_never_ends_drops_the_connection(server: Server) -> None:
    chunked = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    chunked += b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"  # the last chunk, then trailers
    endless = chunked + b"X-Endless: " + b"a" * (1024 * 1024)
    with RawClient(server) as client:
        started = time.monotonic()
        threading.Thread(target=send_ignoring_reset, args=(client, endless), daemon=True).start()
        # Nothing else closes a connection in the middle of a body: without the limit it would stay open.
        assert client.is_closed_by_server()
        assert time.monotonic() - started < HEAD_TIMEOUT_SECONDS


def test_chunked_bodies_with_a_trailer_are_still_read(server: Server) -> None:
    login = b'{"username": "nobody", "password": "not-the-password"}'
    chunked = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    chunked += b"Transfer-Encoding: chunked\r\n\r\n"
    chunked += b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (login[:10], login[10:]))
    chunked += b"0\r\nX-Checksum: none\r\n\r\n"
    with RawClient(server) as client:
        client.send(chunked)
        assert_error(client.response(), 401, "invalid_credentials")


# --- what must keep working ---


def test_a_kept_alive_connection_serves_request_after_request_under_the_same_limits(server: Server) -> None:
    with RawClient(server) as client:
        for _ in range(3):
            client.send(SIMPLE_GET)
            assert_healthy(client.response())
        client.send(head_of(MAX_HEAD_BYTES + 1, 2))
        assert_head_refused(client.response())


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    login = b'{"username": "nobody", "password": "not-the-password"}'
    post = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    post += b"Content-Length: %d\r\n\r\n%s" % (len(login), login)
    with RawClient(server) as client:
        client.send(SIMPLE_GET + post + head_of(MAX_HEAD_BYTES, MAX_HEADER_FIELDS))
        assert_healthy(client.response())
        assert_error(client.response(), 401, "invalid_credentials")
        assert_healthy(client.response())


def test_a_pipelined_head_over_a_limit_is_refused_after_the_answers_before_it(server: Server) -> None:
    with RawClient(server) as client:
        client.send(SIMPLE_GET + SIMPLE_GET + head_of(2048, MAX_HEADER_FIELDS + 1))
        assert_healthy(client.response())
        assert_healthy(client.response())
        assert_head_refused(client.response())
        assert client.is_closed_by_server()


def test_a_body_in_the_same_packet_as_a_head_near_the_limit_is_not_counted_as_head(server: Server) -> None:
    # Whitespace is valid JSON: a body of several KiB that still signs a user up.
    body = b'{"username": "edge_body", "password": "%s"}' % PASSWORD.encode() + b" " * 8192
    request_line = b"POST /api/v1/users HTTP/1.1\r\n"
    framing = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    head = head_of(MAX_HEAD_BYTES - len(framing), 3, request_line)
    head = head[:-2] + framing + b"\r\n"  # the body's headers go last, still within the limit
    assert len(head) == MAX_HEAD_BYTES
    with RawClient(server) as client:
        client.send(head + body)
        created = client.response()
        assert created.status_code == 201, created.text
        assert created.json()["username"] == "edge_body"


# --- slow and idle clients (run side by side: each takes up to a head deadline) ---


def silent(server: Server) -> float:
    with RawClient(server) as client:
        return client.seconds_until_closed(since=time.monotonic())


def half_a_head_then_nothing(server: Server) -> float:
    with RawClient(server) as client:
        started = time.monotonic()
        client.send(REQUEST_LINE + HOST)
        return client.seconds_until_closed(since=started)


def trickle(client: RawClient, started: float) -> float:
    """One byte a second of a head that never ends, until the server closes the connection."""
    client.socket.settimeout(1.0)
    while time.monotonic() - started < 3 * HEAD_TIMEOUT_SECONDS:
        try:
            client.send(b"a")
            if client.socket.recv(1) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:  # reset: the server closed it
            return time.monotonic() - started
    raise AssertionError("the server kept a trickling head open")


def a_byte_a_second(server: Server) -> float:
    with RawClient(server) as client:
        started = time.monotonic()
        client.send(REQUEST_LINE + b"X-Slow: ")
        return trickle(client, started)


def a_byte_a_second_after_a_response(server: Server) -> float:
    with RawClient(server) as client:
        client.send(SIMPLE_GET)
        assert_healthy(client.response())
        started = time.monotonic()
        client.send(REQUEST_LINE)
        return trickle(client, started)


def idle_after_a_response(server: Server) -> float:
    with RawClient(server) as client:
        client.send(SIMPLE_GET)
        assert_healthy(client.response())
        return client.seconds_until_closed(since=time.monotonic())


def busy_keep_alive(server: Server) -> float:
    """A request every two seconds, on one connection, for longer than a head deadline: never dropped."""
    with RawClient(server) as client:
        started = time.monotonic()
        while time.monotonic() - started < HEAD_TIMEOUT_SECONDS + 3:
            client.send(SIMPLE_GET)
            assert_healthy(client.response())
            time.sleep(2)
        return time.monotonic() - started


def test_slow_and_idle_clients_are_dropped_by_the_right_timer(server: Server) -> None:
    scenarios: dict[Callable[[Server], float], tuple[float, float]] = {
        silent: DEADLINE_WINDOW,
        half_a_head_then_nothing: DEADLINE_WINDOW,
        a_byte_a_second: DEADLINE_WINDOW,
        a_byte_a_second_after_a_response: DEADLINE_WINDOW,
        idle_after_a_response: KEEP_ALIVE_WINDOW,
        busy_keep_alive: (HEAD_TIMEOUT_SECONDS, float("inf")),
    }
    with ThreadPoolExecutor(len(scenarios)) as pool:
        futures = {scenario: pool.submit(scenario, server) for scenario in scenarios}
        seconds = {scenario.__name__: future.result() for scenario, future in futures.items()}
    for scenario, (earliest, latest) in scenarios.items():
        assert earliest <= seconds[scenario.__name__] <= latest, (scenario.__name__, seconds)
    # The server itself is unharmed.
    with RawClient(server) as client:
        client.send(SIMPLE_GET)
        assert_healthy(client.response())
