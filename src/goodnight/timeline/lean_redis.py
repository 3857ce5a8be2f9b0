"""A lean asyncio client for the feed page's Redis reads: the timeline read (a MULTI/EXEC transaction) and
the renderings' MGET, pipelined on one TCP connection per process, with Redis's client-side caching for the
renderings.

Why it exists: redis-py's asyncio client spends 60-85 µs of CPU per command even with hiredis packing (a
connection taken from and given back to its pool, the retry wrapper, the observability hooks, a response
callback lookup), a large share of a page. This client does only what a command needs: pack it with
hiredis, write it (together with every other command sent in the same turn of the event loop), and await
a future that ``data_received`` resolves once hiredis has parsed the reply.
Replies are matched to futures in the order the commands were written; a caller cancelled while waiting
leaves its future in the queue, so its reply is still read, then dropped.

Client-side caching (``CLIENT TRACKING``, RESP3): values read by ``mget_tracked`` are kept per connection
(``TrackedValues``) until Redis pushes an invalidation for them. Redis writes that push on this same
connection when the key changes, so it precedes the reply to any command executed after the change: once a
reply has been parsed, what the connection still holds is what Redis held when it executed that command.
A page (see ``timeline.pages``) reads its timeline in a transaction and takes the renderings it already holds
from that transaction's connection, skipping the second round trip. A lost connection loses its values with
it (invalidations may have been lost too); a server without ``HELLO`` (before Redis 6) is read without them.

What it does not do: any other command, Redis Cluster, TLS, Unix sockets, URL options
(``LeanRedis.for_settings`` returns None for those and redis-py serves), nor retries (the feed reader's
breaker is the retry policy). Failures look as they do from redis-py as ``redis_client.connect`` configures
it: 0.5 s to connect, 1 s per command, redis-py's exception classes (so ``REDIS_ERRORS`` catches them and
``REDIS_UNAVAILABLE`` tells an outage). A command that times out, a protocol error or the server going away
fails every command in flight and closes the connection, whose stream can no longer be trusted; the next
call connects again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis._parsers import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from goodnight.config import Settings

DEFAULT_PORT = 6379
# What hiredis returns while no whole reply has arrived (None and False can be replies).
_NOT_ENOUGH_DATA = object()
# hiredis's stub types the command as a 1-tuple; it takes any number of items.
_pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command
_MULTI, _EXEC = _pack(("MULTI",)), _pack(("EXEC",))
# With tracking in OPTIN mode, only the keys of the command right after this one are tracked.
_CACHING_YES = _pack(("CLIENT", "CACHING", "YES"))
_INVALIDATE = b"invalidate"


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int
    db: int = 0
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def plain_address(url: str) -> Address | None:
    """The server of a plain ``redis://[[user]:password@]host[:port][/db]`` URL; None for anything else
    (``rediss://``, ``unix://``, query options), which only redis-py knows how to reach."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.query or parts.fragment:
        return None
    db = unquote(parts.path).strip("/") or "0"
    if not db.isdigit():
        return None
    return Address(
        host=unquote(parts.hostname) if parts.hostname else "localhost",
        port=parts.port or DEFAULT_PORT,
        db=int(db),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class TrackedValues:
    """Values one connection read with tracking on, kept until Redis says they changed (see the module's doc).

    At most ``capacity`` are kept; the oldest stored goes first (a hit does not refresh it: renderings are
    read by many pages while their records are recent, and the oldest are the first to leave the window)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._values: dict[str, bytes] = {}
        # Moves with every invalidation: values read by a command that was in flight across one are not
        # stored, since the invalidation may have been for them and parsed before the caller stored them.
        self.invalidations = 0

    def __len__(self) -> int:
        return len(self._values)

    def get(self, name: str) -> bytes | None:
        return self._values.get(name)

    def store(self, names: Sequence[str], values: Sequence[bytes | None], since: int) -> None:
        """Keep the values a tracked read returned for ``names`` (missing keys are not kept), unless an
        invalidation came after ``since`` (``invalidations`` when the read was sent)."""
        if since != self.invalidations:
            return
        kept = self._values
        for name, value in zip(names, values, strict=True):
            if value is not None:
                kept[name] = value
        while len(kept) > self._capacity:
            del kept[next(iter(kept))]

    def invalidate(self, names: list[bytes] | None) -> None:
        """Forget ``names`` (None: everything, as after FLUSHALL)."""
        self.invalidations += 1
        if names is None:
            self._values.clear()
            return
        for name in names:
            self._values.pop(name.decode(), None)


def _again(failure: RedisError) -> RedisError:
    """A fresh exception like ``failure``, for one more caller (an exception raised twice would collect
    both tracebacks)."""
    return type(failure)(*failure.args)


class _Connection(asyncio.Protocol):
    """One TCP connection: commands written in order, each reply handed to the oldest waiting future.

    One timer watches the oldest command only: replies come in order, so if it is answered in time, every
    command before it was too. Once closed (``failure`` set) the connection is never used again."""

    def __init__(self, loop: asyncio.AbstractEventLoop, address: Address, command_timeout: float) -> None:
        self._loop = loop
        self._address = address
        self._command_timeout = command_timeout
        # Error replies become redis-py's exceptions (NoScriptError, ResponseError, ...), nested ones too.
        self._parser = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            notEnoughData=_NOT_ENOUGH_DATA,
        )
        # Each reply's future (None: a reply to drop) and its deadline, in the order of the commands.
        self._waiting: deque[tuple[asyncio.Future[Any] | None, float]] = deque()
        self._transport: asyncio.Transport  # set by connection_made, before create_connection returns
        self._timer: asyncio.TimerHandle | None = None
        # Commands sent during this turn of the event loop, written together at its end (see ``send``).
        self._outgoing: list[bytes] = []
        self.failure: RedisError | None = None
        # Set once the handshake has turned tracking on (see ``LeanRedis._handshake``).
        self.tracked: TrackedValues | None = None

    def send(self, command: bytes, skipped: int = 0) -> asyncio.Future[Any]:
        """Write ``command`` (packed, possibly several), whose last reply the future returns; the ``skipped``
        replies before it are read and dropped (a transaction's ``OK`` and ``QUEUED``: had one been an
        error, ``EXEC`` answers with an error too)."""
        if self.failure is not None:  # lost after the caller took it
            raise _again(self.failure)
        reply = self._loop.create_future()
        deadline = self._loop.time() + self._command_timeout
        # Written at the end of this turn of the loop, with every command other pages send meanwhile: under
        # load, one write (and one read for Redis) carries many pages' commands instead of one each.
        if not self._outgoing:
            self._loop.call_soon(self._write_outgoing)
        self._outgoing.append(command)
        waiting = self._waiting
        for _ in range(skipped):
            waiting.append((None, deadline))
        waiting.append((reply, deadline))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check_deadline)
        return reply

    def _write_outgoing(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self.failure is None:  # else the transport is gone, and so are the commands' callers
            self._transport.write(b"".join(outgoing))

    def close(self, failure: RedisError) -> None:
        """Fail every command in flight with ``failure`` (a fresh instance each) and drop the connection."""
        if self.failure is not None:
            return
        self.failure = failure
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport.abort()  # unsent commands are dropped: nobody waits for their replies any more
        waiting, self._waiting = self._waiting, deque()
        for reply, _ in waiting:
            if reply is not None and not reply.done():
                reply.set_exception(_again(failure))

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's does not subclass asyncio.Transport, hence no isinstance check).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        try:
            parsed = parser.gets()
            while parsed is not _NOT_ENOUGH_DATA:
                if type(parsed) is hiredis.PushNotification:  # not a reply: no command waits for it
                    self._pushed(parsed)
                    parsed = parser.gets()
                    continue
                reply, _ = self._waiting.popleft()
                # None, or done because its caller was cancelled: the reply is dropped.
                if reply is not None and not reply.done():
                    if isinstance(parsed, RedisError):
                        reply.set_exception(parsed)
                    else:
                        reply.set_result(parsed)
                parsed = parser.gets()
        except InvalidResponse as exc:
            self.close(InvalidResponse(f"Protocol error from {self._address}: {exc}"))
        except IndexError:
            self.close(InvalidResponse(f"A reply from {self._address} that no command asked for"))

    def _pushed(self, message: list[Any]) -> None:
        if self.tracked is not None and message and message[0] == _INVALIDATE:
            self.tracked.invalidate(message[1])

    def connection_lost(self, exc: Exception | None) -> None:
        reason = "Connection closed by server." if exc is None else f"{type(exc).__name__}: {exc}"
        self.close(RedisConnectionError(f"Error while reading from {self._address}: {reason}"))

    def _check_deadline(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        deadline = self._waiting[0][1]
        if self._loop.time() >= deadline:
            self.close(RedisTimeoutError(f"Timeout reading from {self._address}"))
        else:
            self._timer = self._loop.call_at(deadline, self._check_deadline)


def _retrieve_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class LeanRedis:
    """The feed page's two reads on a single Redis node (see the module's doc). Connects on first use, and
    again on the next call after a failure; calls made meanwhile share one connection attempt."""

    def __init__(
        self,
        address: Address,
        *,
        connect_timeout: float,  # the settings' Redis timeouts, as ``redis_client.connect`` gives redis-py
        command_timeout: float,
        tracked_capacity: int = 0,  # values kept under client-side caching; 0: none (no tracking)
    ) -> None:
        self.address = address
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._tracked_capacity = tracked_capacity
        self._connection: _Connection | None = None
        self._opening: asyncio.Task[_Connection] | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> LeanRedis | None:
        """The lean client for the configured Redis, or None where redis-py must serve (a Cluster, TLS, a
        Unix socket, URL options)."""
        if settings.redis_url is None or settings.redis_cluster:
            return None
        address = plain_address(settings.redis_url)
        if address is None:
            return None
        return cls(
            address,
            connect_timeout=settings.redis_connect_timeout_seconds,
            command_timeout=settings.redis_timeout_seconds,
            tracked_capacity=settings.redis_client_cache_size,
        )

    async def transaction(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The replies of ``commands`` run as one MULTI/EXEC transaction, written at once; an error reply
        among them raises it."""
        replies, _ = await self.transaction_and_tracked(commands)
        return replies

    async def transaction_and_tracked(
        self, commands: Sequence[tuple[Any, ...]]
    ) -> tuple[list[Any], TrackedValues | None]:
        """``transaction``, and the tracked values of the connection that ran it: each is what Redis held
        when it executed the transaction, or newer (None when the connection does not track)."""
        packed = b"".join([_MULTI, *map(_pack, commands), _EXEC])
        connection = await self._connection_for_use()
        replies: list[Any] = await connection.send(packed, skipped=len(commands) + 1)
        for reply in replies:
            if isinstance(reply, RedisError):
                raise reply
        return replies, connection.tracked

    async def mget(self, names: Sequence[str | bytes]) -> list[bytes | None]:
        found: list[bytes | None] = await self.execute("MGET", *names)
        return found

    async def mget_tracked(self, names: Sequence[str]) -> list[bytes | None]:
        """``mget``, keeping what it finds in the connection's tracked values (when it tracks) until Redis
        says it changed."""
        connection = await self._connection_for_use()
        tracked = connection.tracked
        if tracked is None:
            found: list[bytes | None] = await connection.send(_pack(("MGET", *names)))
            return found
        since = tracked.invalidations
        caching = connection.send(_CACHING_YES)  # written with the MGET, in the same write
        caching.add_done_callback(_retrieve_failure)  # a failure fails the MGET too, which raises it
        found = await connection.send(_pack(("MGET", *names)))
        # Answered before the MGET was; refused, the MGET's keys would not be tracked.
        if caching.done() and caching.exception() is None:
            tracked.store(names, found, since)
        return found

    async def execute(self, *command: Any) -> Any:
        """One command's reply, as redis-py returns it without response callbacks: bytes, ints, None, lists;
        an error reply raises redis-py's exception for it."""
        connection = await self._connection_for_use()
        return await connection.send(_pack(command))

    async def _connection_for_use(self) -> _Connection:
        connection = self._connection
        if connection is None or connection.failure is not None:
            connection = await self._connect()
        return connection

    async def close(self) -> None:
        """Fail the commands in flight and close the connection. A connection attempt under way is let
        finish (within its timeouts): cancelling it would raise CancelledError in callers nobody cancelled."""
        if self._opening is not None:
            await asyncio.wait([self._opening])
        if self._connection is not None:
            self._connection.close(RedisConnectionError("The client closed the connection"))
            self._connection = None

    async def _connect(self) -> _Connection:
        if self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._open())
            # Every caller may have been cancelled by the time the attempt fails: its failure is theirs to
            # see, not asyncio's "exception was never retrieved" to log.
            self._opening.add_done_callback(_retrieve_failure)
        # Shielded: a caller cancelled meanwhile must not cancel the attempt the others wait for.
        return await asyncio.shield(self._opening)

    async def _open(self) -> _Connection:
        try:
            connection = await self._connect_tcp()
            try:
                await self._handshake(connection)
            except BaseException:
                connection.close(RedisConnectionError(f"Could not set up the connection to {self.address}"))
                raise
            self._connection = connection
            return connection
        finally:
            self._opening = None

    async def _connect_tcp(self) -> _Connection:
        loop = asyncio.get_running_loop()
        address = self.address
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, address, self._command_timeout), address.host, address.port
                )
        except TimeoutError:  # before OSError, of which it is a subclass
            raise RedisTimeoutError(f"Timeout connecting to {address}") from None
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to {address}: {exc}") from exc
        return connection

    async def _handshake(self, connection: _Connection) -> None:
        """AUTH and SELECT, as redis-py sends them on a new connection."""
        address = self.address
        if address.username or address.password:
            password = address.password or ""
            credentials = (address.username, password) if address.username else (password,)
            await connection.send(_pack(("AUTH", *credentials)))
        if address.db:
            await connection.send(_pack(("SELECT", address.db)))
        if self._tracked_capacity > 0:
            await self._track(connection)

    async def _track(self, connection: _Connection) -> None:
        """Client-side caching in its default mode, which needs RESP3: invalidations come on this connection,
        in order with its replies. OPTIN: only what ``mget_tracked`` reads is tracked. A server that does not
        know HELLO (before Redis 6) is read without it."""
        try:
            await connection.send(_pack(("HELLO", 3)))
        except ResponseError:
            return
        await connection.send(_pack(("CLIENT", "TRACKING", "ON", "OPTIN")))
        connection.tracked = TrackedValues(self._tracked_capacity)
