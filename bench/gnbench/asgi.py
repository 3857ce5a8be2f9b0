"""Calling the app in process, the way a server would, to measure what one request costs."""

from __future__ import annotations

from typing import Any


def get_scope(path: str, token: str | None = None, client: str = "127.0.0.1") -> dict[str, Any]:
    """The ASGI scope of ``GET path`` from ``client``, with a bearer token when one is given."""
    headers = [(b"host", b"bench")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": (client, 1),
        "server": ("127.0.0.1", 80),
    }
