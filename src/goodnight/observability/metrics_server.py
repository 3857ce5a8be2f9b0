"""``/metrics`` for ``goodnight worker`` processes, which serve no HTTP otherwise: a minimal HTTP/1.1
server on the worker's own event loop, one request per connection, under the same access rule as the API.

It answers ``GET /metrics`` and refuses everything else in the API's error envelope. A request head must
arrive whole within a few seconds and a few kilobytes, so a slow or endless client costs one socket for a
moment, never the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus

from goodnight.errors import GoodnightError, NotFound, envelope
from goodnight.kit.ids import new_id
from goodnight.observability.access import MetricsAccess
from goodnight.observability.exposition import CONTENT_TYPE, exposition
from goodnight.observability.metrics_route import METRICS_PATH

logger = logging.getLogger("goodnight.metrics")
MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT_SECONDS = 5.0


class MethodNotAllowed(GoodnightError):
    status_code = 405
    code = "method_not_allowed"
    default_message = "Only GET is allowed on /metrics."

    def __init__(self) -> None:
        super().__init__(headers={"Allow": "GET"})


def _response(status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Content-Type: {content_type}"]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _refusal(error: GoodnightError) -> bytes:
    request_id = new_id().hex
    body = envelope(error.code, error.message, request_id)
    headers = {"X-Request-ID": request_id, **(error.headers or {})}
    return _response(error.status_code, "application/json", body, headers)


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[bytes, bytes]]]:
    """(method, path, headers with lower-case names); ValueError for anything that is not HTTP/1.x."""
    request_line, *header_lines = head.rstrip(b"\r\n").split(b"\r\n")
    method, target, version = request_line.decode("latin-1").split(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(version)
    headers = []
    for line in header_lines:
        name, separator, value = line.partition(b":")
        if not separator:
            raise ValueError(line)
        headers.append((name.strip().lower(), value.strip()))
    return method, target.split("?", 1)[0], headers


class MetricsServer:
    def __init__(self, access: MetricsAccess) -> None:
        self.access = access

    async def answer(self, head: bytes, peer: str | None) -> bytes:
        try:
            method, path, headers = _parse_head(head)
        except ValueError:
            return _response(400, "text/plain; charset=utf-8", b"bad request\n")
        try:
            if path != METRICS_PATH:
                raise NotFound(f"No route matches {method} {path}.")
            if method != "GET":
                raise MethodNotAllowed()
            self.access.check(headers, peer)
        except GoodnightError as error:
            return _refusal(error)
        return _response(200, CONTENT_TYPE, await asyncio.to_thread(exposition))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_SECONDS)
            writer.write(await self.answer(head, peer[0] if peer else None))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # too slow, too long, or gone: just close
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving_metrics(access: MetricsAccess, host: str, port: int) -> AsyncIterator[asyncio.Server]:
    """The metrics server, listening on ``host:port`` while the block runs."""
    server = await asyncio.start_server(MetricsServer(access).handle, host, port, limit=MAX_HEAD_BYTES)
    logger.info("metrics served on http://%s:%s%s", host, port, METRICS_PATH)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()
