"""A TCP proxy that can cut the line: Redis unreachable while it keeps its data (a network partition)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from tests.support.redis_server import free_port

CHUNK = 65536


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port`` inside the running event loop.

    ``cut()`` drops every open connection and refuses new ones; ``restore()`` accepts again on the same port.
    ``before_send``, when set, sees every chunk a client sends and runs before it is forwarded: a test can
    make something happen to the server at the exact moment a given command reaches it.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.before_send: Callable[[bytes], Awaitable[None]] | None = None
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        return self

    async def restore(self) -> None:
        await self.start()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._writers.clear()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, upstream_writer))
        for source, sink, upstream in (
            (client_reader, upstream_writer, True),
            (upstream_reader, client_writer, False),
        ):
            task = asyncio.get_running_loop().create_task(self._pipe(source, sink, upstream=upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        try:
            while chunk := await source.read(CHUNK):
                if upstream and self.before_send is not None:
                    await self.before_send(chunk)
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()
            self._writers.discard(sink)
