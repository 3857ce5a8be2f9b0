"""Writing many Redis commands fast: commands packed by hiredis (C), sent in one write, replies counted.

redis-py packs pipeline commands in Python, a few microseconds per argument; a bulk load of tens of millions
of timeline entries would spend minutes there. ``RawRedis`` packs with ``hiredis.pack_command`` onto its own
connection and parses the replies with ``hiredis.Reader``, failing on the first error reply. A Redis Cluster
routes keys to nodes, which this does not: there ``PipelineSink`` sends the same commands through redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Protocol

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

from goodnight.redis_client import RedisClient

Arg = str | bytes | int | float


class RedisWriteError(RuntimeError):
    pass


class CommandSink(Protocol):
    def command(self, *args: Arg) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class RawRedis:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()
        self._packed: list[bytes] = []

    @classmethod
    async def open(cls, url: str) -> RawRedis:
        options: dict[str, Any] = dict(parse_url(url))
        if "path" in options:
            reader, writer = await asyncio.open_unix_connection(options["path"])
        else:
            secure = options.get("connection_class") is SSLConnection
            reader, writer = await asyncio.open_connection(
                options.get("host", "localhost"),
                options.get("port", 6379),
                ssl=ssl.create_default_context() if secure else None,
            )
        sink = cls(reader, writer)
        if options.get("password") is not None:
            username = options.get("username")
            sink.command("AUTH", *([username] if username else []), options["password"])
        if options.get("db"):
            sink.command("SELECT", int(options["db"]))
        await sink.flush()
        return sink

    def command(self, *args: Arg) -> None:
        # The stub declares a 1-tuple; pack_command takes any number of arguments.
        self._packed.append(hiredis.pack_command(args))  # type: ignore[arg-type]

    async def flush(self) -> None:
        """Send every queued command and wait for all their replies."""
        pending, packed = len(self._packed), self._packed
        if not pending:
            return
        self._packed = []
        self._writer.write(b"".join(packed))
        await self._writer.drain()
        while pending:
            data = await self._reader.read(1 << 20)
            if not data:
                raise RedisWriteError("Redis closed the connection")
            self._parser.feed(data)
            while pending and (reply := self._parser.gets()) is not False:
                pending -= 1
                if isinstance(reply, hiredis.ReplyError):
                    raise RedisWriteError(f"Redis refused a command: {reply}")

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


class PipelineSink:
    """The same interface over redis-py (Redis Cluster, where commands are routed by key)."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._pipe = redis.pipeline(transaction=False)

    def command(self, *args: Arg) -> None:
        self._pipe.execute_command(*args)

    async def flush(self) -> None:
        await self._pipe.execute()
        self._pipe = self._redis.pipeline(transaction=False)

    async def close(self) -> None:
        return None
