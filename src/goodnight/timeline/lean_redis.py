"""A lean asyncio client for the feed page's Redis reads: the timeline read (a MULTI/EXEC transaction) and
the renderings' MGET, pipelined on one TCP connection per process, with Redis's client-side caching.

Why it exists: redis-py's asyncio client spends 60-85 µs of CPU per command even with hiredis packing (a
connection taken from and given back to its pool, the retry wrapper, the observability hooks, a response
callback lookup), a large share of a page. This client does only what a command needs: pack it with
hiredis, write it (together with every other command sent in the same turn of the event loop), and await
a future that ``data_received`` resolves once hiredis has parsed the reply.
Replies are matched to futures in the order the commands were written; a caller cancelled while waiting
leaves its future in the queue, so its reply is still read, then dropped.

Client-side caching (``CLIENT TRACKING``, RESP3, opt-in): replies of tracked reads (``read_tracked``,
``mget_tracked``) are kept per connection and per key (``TrackedValues``) until Redis pushes an
invalidation for the key. Redis writes that push on this same connection when the key changes (a write,
an expiry, an eviction, a flush), so it precedes the reply to any command executed after the change: once a
reply has been parsed, a held reply still there is what Redis held when it executed that command. So a
tracked read answers what it holds from memory and sends only the rest, and when it holds everything it
still makes one round trip, a PING, after which every change made before the call is known; a held reply
whose key changed before that reply is read again. A page (see ``timeline.pages``) thus costs one round
trip, and almost nothing of Redis's time, while its reader's timeline and items are unchanged. A lost
connection loses what it held (invalidations may have been lost with it); a server without ``HELLO``
(before Redis 6) is read without it.

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
_PING = _pack(("PING",))
_INVALIDATE = b"invalidate"
# What a key's entry returns for a command it holds no reply to (None is a reply).
_NOT_HELD = object()
# Replies kept per key: each cursor of a scroll reads a bucket with other arguments.
MAX_REPLIES_PER_KEY = 8
# A held key's replies, by the command that read them.
Entry = dict[tuple[Any, ...], Any]


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
    """Replies to reads of single keys on one connection with tracking on, kept per key until Redis says the
    key changed (see the module's doc).

    A key's entry holds the replies to each command read of it (``("GET", key)`` for its value). A read
    opens the key's entry before it is sent; an invalidation drops the entry, so a reply is stored only if
    its key's entry is still the one opened (nothing changed the key meanwhile), and a reply taken from
    memory before a round trip is still good after it only if its entry is still there. At most
    ``capacity`` replies are held; the key opened first goes first (renderings are read by many pages while
    their records are recent, and the oldest are the first to leave the window)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: dict[str, Entry] = {}
        self._replies = 0

    def __len__(self) -> int:
        """Replies held."""
        return self._replies

    def open(self, name: str) -> Entry:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = {}
            if len(self._entries) > self._capacity:  # keys read but missing hold no reply, yet count here
                self._evict_oldest()
        return entry

    def holds(self, name: str, entry: Entry) -> bool:
        """Whether ``entry`` (opened earlier) is still ``name``'s: no invalidation of the key since."""
        return self._entries.get(name) is entry

    def store(self, name: str, entry: Entry, command: tuple[Any, ...], reply: Any) -> None:
        if self._entries.get(name) is not entry or command in entry:
            return
        if len(entry) >= MAX_REPLIES_PER_KEY:  # a long scroll: older pages' replies go
            self._replies -= len(entry)
            entry.clear()
        entry[command] = reply
        self._replies += 1
        while self._replies > self._capacity:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        entries = self._entries
        self._replies -= len(entries.pop(next(iter(entries))))

    def value(self, name: str) -> bytes | None:
        """The key's value, if held (None: not held, or the key is missing)."""
        entry = self._entries.get(name)
        return entry.get(("GET", name)) if entry is not None else None

    def invalidate(self, names: list[bytes] | None) -> None:
        """Forget ``names`` (None: everything, as after FLUSHALL)."""
        if names is None:
            self._entries.clear()
            self._replies = 0
            return
        for name in names:
            entry = self._entries.pop(name.decode(), None)
            if entry is not None:
                self._replies -= len(entry)


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
        return await self._transaction_on(await self._connection_for_use(), commands)

    @staticmethod
    async def _transaction_on(connection: _Connection, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        packed = b"".join([_MULTI, *map(_pack, commands), _EXEC])
        replies: list[Any] = await connection.send(packed, skipped=len(commands) + 1)
        for reply in replies:
            if isinstance(reply, RedisError):
                raise reply
        return replies

    async def read_tracked(
        self, reads: Sequence[tuple[str, tuple[Any, ...]]]
    ) -> tuple[list[Any], TrackedValues | None]:
        """The replies to ``reads`` (each a key and a read-only command of that key alone) as one MULTI/EXEC
        would return them, all as of one moment; and the tracked values of the connection, each current as
        of that moment or newer (None where the connection does not track).

        Replies held from earlier reads are taken from memory and the others read in a MULTI/EXEC that
        tracks their keys; with everything held, a PING is the round trip after which Redis has told of
        every change made before it. A held reply whose key changed before that reply is read again."""
        connection = await self._connection_for_use()
        tracked = connection.tracked
        if tracked is None:
            return await self._transaction_on(connection, [command for _, command in reads]), None
        replies, entries, missing = self._held(tracked, reads)
        await self._read_missing(connection, tracked, reads, replies, entries, missing)
        held = [index for index in range(len(reads)) if index not in missing]
        if any(not tracked.holds(reads[index][0], entries[index]) for index in held):
            # A key changed before the round trip's reply: read them all (rare; always settles).
            everything = list(range(len(reads)))
            await self._read_missing(connection, tracked, reads, replies, entries, everything)
        return replies, tracked

    @staticmethod
    def _held(
        tracked: TrackedValues, reads: Sequence[tuple[str, tuple[Any, ...]]]
    ) -> tuple[list[Any], list[Entry], list[int]]:
        replies: list[Any] = []
        entries = []
        missing = []
        for index, (name, command) in enumerate(reads):
            entry = tracked.open(name)
            entries.append(entry)
            reply = entry.get(command, _NOT_HELD)
            if reply is _NOT_HELD:
                missing.append(index)
            replies.append(reply)
        return replies, entries, missing

    async def _read_missing(
        self,
        connection: _Connection,
        tracked: TrackedValues,
        reads: Sequence[tuple[str, tuple[Any, ...]]],
        replies: list[Any],
        entries: list[Entry],
        missing: list[int],
    ) -> None:
        """Read ``missing`` (indexes into ``reads``) in one tracked MULTI/EXEC into ``replies`` and into the
        keys' entries; with none missing, a PING."""
        if not missing:
            await connection.send(_PING)
            return
        caching = connection.send(_CACHING_YES)  # written with the transaction, in the same write
        caching.add_done_callback(_retrieve_failure)  # a failure fails the transaction too, which raises it
        fresh = await self._transaction_on(connection, [reads[index][1] for index in missing])
        # Answered before the transaction was; refused, its keys would not be tracked.
        keep = caching.done() and caching.exception() is None
        for index, reply in zip(missing, fresh, strict=True):
            replies[index] = reply
            if keep:
                name, command = reads[index]
                tracked.store(name, entries[index], command, reply)

    async def mget(self, names: Sequence[str | bytes]) -> list[bytes | None]:
        found: list[bytes | None] = await self.execute("MGET", *names)
        return found

    async def mget_tracked(
        self, names: Sequence[str], held: TrackedValues | None = None
    ) -> list[bytes | None]:
        """``mget``, keeping what it finds in the connection's tracked values (when it tracks) until Redis
        says it changed. Values ``held`` (a connection's tracked values, current as of a reply of its) are
        taken from memory, and only the others fetched."""
        values: list[bytes | None] = [held.value(name) if held is not None else None for name in names]
        missing = [index for index, value in enumerate(values) if value is None]
        if missing:
            fetched = await self._fetch_tracked([names[index] for index in missing])
            for index, value in zip(missing, fetched, strict=True):
                values[index] = value
        return values

    async def _fetch_tracked(self, names: Sequence[str]) -> list[bytes | None]:
        connection = await self._connection_for_use()
        tracked = connection.tracked
        if tracked is None:
            found: list[bytes | None] = await connection.send(_pack(("MGET", *names)))
            return found
        entries = [tracked.open(name) for name in names]
        caching = connection.send(_CACHING_YES)  # written with the MGET, in the same write
        caching.add_done_callback(_retrieve_failure)  # a failure fails the MGET too, which raises it
        found = await connection.send(_pack(("MGET", *names)))
        # Answered before the MGET was; refused, the MGET's keys would not be tracked.
        if caching.done() and caching.exception() is None:
            for name, entry, value in zip(names, entries, found, strict=True):
                if value is not None:
                    tracked.store(name, entry, ("GET", name), value)
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
