"""Which worker process of ``goodnight serve --workers N`` serves a given keep-alive connection (Linux).

Workers share one listening socket and the kernel hands each new connection to one of them; a kept-alive
connection then stays with that worker. The server side of a connection is a socket whose inode appears in
``/proc/net/tcp`` (with the client's port as its remote end) and among the file descriptors of exactly one
process, which is how a test can aim requests at every worker in turn.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.load import worker_pids
from tests.support.processes import Server

ATTEMPTS = 64


def _server_socket_inode(server_port: int, client_port: int) -> int | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if (local_port, remote_port) == (server_port, client_port) and fields[9] != "0":
                    return int(fields[9])
    return None


def _holder(pids: list[int], inode: int) -> int | None:
    wanted = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for descriptor in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(descriptor.path) == wanted:
                        return pid
    return None


def worker_of(server: Server, response: httpx.Response, pids: list[int]) -> int | None:
    """The worker that answered ``response``, on a connection that is still open."""
    client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    inode = _server_socket_inode(server.port, client_port)
    return None if inode is None else _holder(pids, inode)


@contextmanager
def one_client_per_worker(server: Server, workers: int) -> Iterator[dict[int, httpx.Client]]:
    """A kept-alive client pinned to each worker, by opening connections until every worker holds one."""
    pids = sorted(worker_pids(server))
    assert len(pids) == workers, (pids, server.log())
    pinned: dict[int, httpx.Client] = {}
    spare: list[httpx.Client] = []
    try:
        for _ in range(ATTEMPTS):
            client = httpx.Client(
                base_url=server.api_url, timeout=10.0, limits=httpx.Limits(max_connections=1)
            )
            probe = client.get("/health")
            assert probe.status_code == 200, probe.text
            pid = worker_of(server, probe, pids)
            if pid is not None and pid not in pinned:
                pinned[pid] = client
            else:
                spare.append(client)  # kept open, so the next connection may well land elsewhere
            if len(pinned) == workers:
                break
        assert len(pinned) == workers, (
            f"{ATTEMPTS} connections reached only workers {sorted(pinned)} of {pids}"
        )
        yield pinned
    finally:
        for client in [*pinned.values(), *spare]:
            client.close()
