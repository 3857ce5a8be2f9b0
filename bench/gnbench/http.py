"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for the harness's own requests.

wrk does the throughput runs. The requests the harness makes itself (logins, walking to a deep page, timed
clock-outs, the open-loop mixed workload and fanout-lag polling) go through this client: one pre-formatted
request and one read of the status line, headers and body per call, a few tens of microseconds of Python,
instead of a general-purpose client's several hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson


class HttpError(Exception):
    """The connection failed or the response could not be read."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    seconds: float  # from the request being written to the body being read

    def json(self) -> Any:
        return orjson.loads(self.body)


# uvicorn closes a keep-alive connection after 5 idle seconds; one idle this long is not trusted again.
MAX_IDLE_SECONDS = 3.0


class Connection:
    """One keep-alive connection; reopened transparently when it was closed or sat idle too long."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._host_header = f"Host: {host}:{port}\r\n".encode()
        self._last_used = 0.0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """The streams, and whether the connection is a reused one (which the server may have closed)."""
        if self._writer is not None and time.monotonic() - self._last_used > MAX_IDLE_SECONDS:
            await self.close()
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            return self._reader, self._writer, False
        return self._reader, self._writer, True

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def request(
        self, method: str, path: str, *, token: str | None = None, json_body: Any = None
    ) -> Response:
        body = b"" if json_body is None else orjson.dumps(json_body)
        head = [f"{method} {path} HTTP/1.1\r\n".encode(), self._host_header]
        if token is not None:
            head.append(f"Authorization: Bearer {token}\r\n".encode())
        if json_body is not None or method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Type: application/json\r\n")
            head.append(f"Content-Length: {len(body)}\r\n".encode())
        head.append(b"\r\n")
        payload = b"".join(head) + body
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(payload)
        except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            await self.close()
            raise HttpError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    async def _exchange(self, payload: bytes) -> Response:
        reader, writer, reused = await self._open()
        started = time.perf_counter()
        writer.write(payload)
        try:
            status_line = await reader.readline()
        except ConnectionError:
            status_line = b""
        if not status_line:
            if not reused:
                raise EOFError("connection closed before the status line")
            # The server closed a reused connection before reading the request: send it again, once.
            await self.close()
            reader, writer, _ = await self._open()
            started = time.perf_counter()
            writer.write(payload)
            status_line = await reader.readline()
            if not status_line:
                raise EOFError("connection closed before the status line")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readline()
            body = b"".join(parts)
        else:
            body = await reader.readexactly(length) if length else b""
        seconds = time.perf_counter() - started
        self._last_used = time.monotonic()
        if close:
            await self.close()
        return Response(status, body, seconds)


class Pool:
    """Idle connections to one server, handed out one request at a time."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: deque[Connection] = deque()
        self._all: list[Connection] = []

    @property
    def size(self) -> int:
        return len(self._all)

    async def request(
        self, method: str, path: str, *, token: str | None = None, json_body: Any = None
    ) -> Response:
        connection = self._idle.pop() if self._idle else self._new()
        try:
            return await connection.request(method, path, token=token, json_body=json_body)
        finally:
            self._idle.append(connection)

    def _new(self) -> Connection:
        connection = Connection(self.host, self.port, self.timeout)
        self._all.append(connection)
        return connection

    async def close(self) -> None:
        await asyncio.gather(*(connection.close() for connection in self._all))
        self._all.clear()
        self._idle.clear()
