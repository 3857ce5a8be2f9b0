"""HTTP/1.1 over one plain socket, for tests about the connection itself (keep-alive, chunked bodies).

General-purpose clients reconnect silently when a server closes a connection; this one never does, so a
test can tell a kept-alive connection from a closed one.
"""

from __future__ import annotations

import socket

import httpx


class ConnectionClosed(AssertionError):
    """The server closed the connection instead of answering on it."""


class RawConnection:
    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port = port
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._reader = self._socket.makefile("rb")

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self._reader.close()
        self._socket.close()

    def request(
        self, method: str, path: str, *, body: bytes | None = None, chunks: list[bytes] | None = None
    ) -> httpx.Response:
        """Send one request (``chunks`` go with ``Transfer-Encoding: chunked``) and read its response."""
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
        payload = b""
        if chunks is not None:
            head.append("Transfer-Encoding: chunked")
            payload = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
        elif body is not None:
            head.append(f"Content-Length: {len(body)}")
            payload = body
        try:
            self._socket.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
        except OSError as exc:
            raise ConnectionClosed(f"the server closed the connection: {exc}") from exc
        request = httpx.Request(method, f"http://127.0.0.1:{self.port}{path}")
        return self._read_response(request)

    def _read_response(self, request: httpx.Request) -> httpx.Response:
        status_line = self._reader.readline()
        if not status_line:
            raise ConnectionClosed("the server closed the connection instead of answering")
        status = int(status_line.split(b" ", 2)[1])
        headers: list[tuple[str, str]] = []
        while (line := self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        length = dict(headers).get("content-length")
        assert length is not None, f"expected a Content-Length (chunked responses are not read): {headers}"
        return httpx.Response(
            status, headers=headers, content=self._reader.read(int(length)), request=request
        )
