"""The HTTP/1.1 protocol ``goodnight serve`` speaks: uvicorn's httptools protocol, with limits on heads.

Stock uvicorn puts no bound on a request head: a 1 MB header or 5,000 header fields reach the app, a header
that never ends is buffered for as long as it keeps coming (httptools grows the value by concatenation, so
50 such connections took two workers from ~105 MB to ~860 MB), and a client that never finishes its head
holds its connection for ever. This protocol refuses a head over :data:`MAX_HEAD_BYTES` or
:data:`MAX_HEADER_FIELDS` with 431 before the parser buffers more of it, and closes a connection whose head
is not complete :data:`HEAD_TIMEOUT_SECONDS` after it started (slowloris). Idle keep-alive connections are
closed by uvicorn itself after :data:`KEEP_ALIVE_TIMEOUT_SECONDS`.

Uvicorn's protocol classes are not a stable API: this class overrides its parser callbacks and relies on a
few of its attributes (``parser``, ``transport``, ``cycle``, ``pipeline``, ``loop``, ``server_state``).
``tests/edge/test_http_edge.py`` checks that they are still there and drives every limit through a real
server, so an upgrade that breaks them fails the tests.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from goodnight.edge.headers import EVERY_RESPONSE
from goodnight.errors import envelope
from goodnight.kit.ids import new_id

logger = logging.getLogger("goodnight.edge")

# The request line, the header lines and the blank line that ends them, in bytes.
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_FIELDS = 100
# From the first byte of a request (or the connection's opening) to the end of its head.
HEAD_TIMEOUT_SECONDS = 10.0
# An idle connection between two requests; passed to uvicorn as ``timeout_keep_alive``.
KEEP_ALIVE_TIMEOUT_SECONDS = 5

END_OF_HEAD = b"\r\n\r\n"  # httptools (llhttp) insists on CRLF line ends, so no other form ends a head
# Each parsed header field stands for at least ``name: value\r\n`` on the wire.
FIELD_FRAMING_BYTES = len(b": \r\n")
HEAD_TOO_LARGE_CODE = "request_header_fields_too_large"
TOO_MANY_BYTES = f"The request line and headers are limited to {MAX_HEAD_BYTES} bytes in all."
TOO_MANY_FIELDS = f"A request may carry at most {MAX_HEADER_FIELDS} header fields."
STATUS_LINE_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"


class HeadRefused(Exception):
    """The request head broke a limit. Raised inside a parser callback, it stops the parser at once."""


class _RefusalPassingParser:
    """uvicorn's parser, except that a head refused by one of our callbacks comes out as :class:`HeadRefused`.

    httptools wraps whatever a callback raises in an ``HttpParserCallbackError``, which uvicorn answers as a
    malformed request (a 400 and a warning). Unwrapping it here lets the protocol answer 431 instead.
    """

    def __init__(self, parser: httptools.HttpRequestParser) -> None:
        self._parser = parser

    def feed_data(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, HeadRefused):
                raise error.__context__ from None
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size limit, a field limit and a deadline on every request head.

    Two counts guard the size. Bytes are counted off the socket *before* the parser sees them, for every read
    that starts inside a head: up to the blank line that ends the head, so a body in the same read is not
    counted, and a head that never ends is refused after 16 KiB instead of being buffered. A request
    pipelined behind another one can begin part-way through a read, where the socket count cannot see where
    it starts; the parser callbacks count what it parses (URL, header names and values), which catches such
    a head once its pieces are complete. A read is at most a few hundred KiB, which bounds what the parser
    can hold in the meantime.

    Trailer fields (after a chunked body) count with the head's fields, and a body may not carry more than
    16 KiB in a row that is not body data: httptools buffers a trailer that never ends like a header. A
    request at fault there is the one in flight, so its connection is dropped without an answer.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.parser = _RefusalPassingParser(self.parser)  # type: ignore[assignment]
        # True from the end of one request (or the connection's opening) to the end of the next one's head.
        self._reading_head = True
        self._message_begun = False
        self._head_bytes_received = 0
        self._previous_read_tail = b""  # a blank line may straddle two reads
        self._head_bytes_parsed = 0
        self._header_fields = 0
        self._head_deadline: asyncio.TimerHandle | None = None
        # Parser events that show a body moving (body bytes, a message's end), and the bytes read in a body
        # since the last one: chunk-size lines and trailer fields, which httptools buffers like headers.
        self._body_events = 0
        self._bytes_without_body = 0
        # Set once a head is refused or timed out: the connection closes after the responses it still owes.
        self._ending = False
        self._last_words = b""

    # --- the connection ---

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A client that connects and sends nothing gets the same deadline as one that stalls mid-head.
        self._start_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._ending or self.transport.is_closing():
            return  # refused, dropped or timed out: nothing more is parsed
        started_in_head, body_events = self._reading_head, self._body_events
        if started_in_head:
            self._start_head_deadline()
            self._head_bytes_received += self._head_bytes_in(data)
            if self._head_bytes_received > MAX_HEAD_BYTES:
                self._refuse(TOO_MANY_BYTES)
                return
        self._previous_read_tail = data[-(len(END_OF_HEAD) - 1) :]
        try:
            super().data_received(data)
        except HeadRefused as refusal:
            if self._reading_head:
                self._refuse(str(refusal))
            else:
                self._drop(f"trailer fields: {refusal}")
            return
        if started_in_head or self._body_events != body_events:
            self._bytes_without_body = 0
        else:
            self._bytes_without_body += len(data)
            if self._bytes_without_body > MAX_HEAD_BYTES:
                self._drop(f"more than {MAX_HEAD_BYTES} bytes of a body carried no body data")
                return
        if self._reading_head and self._message_begun:
            self._start_head_deadline()  # a pipelined request began part-way through this read

    def _head_bytes_in(self, data: bytes) -> int:
        """How much of ``data`` belongs to the head being read: up to the blank line that ends it, if any."""
        straddling = (self._previous_read_tail + data[: len(END_OF_HEAD) - 1]).find(END_OF_HEAD)
        if straddling != -1:
            return straddling + len(END_OF_HEAD) - len(self._previous_read_tail)
        end = data.find(END_OF_HEAD)
        return len(data) if end == -1 else end + len(END_OF_HEAD)

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_begun = True
        self._head_bytes_parsed = 0
        self._header_fields = 0

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_fields += 1
        if self._header_fields > MAX_HEADER_FIELDS:
            raise HeadRefused(TOO_MANY_FIELDS)
        self._count_parsed(len(name) + len(value) + FIELD_FRAMING_BYTES)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_deadline()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_events += 1
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._body_events += 1
        self._reading_head = True
        self._message_begun = False
        self._head_bytes_received = 0

    def _count_parsed(self, size: int) -> None:
        self._head_bytes_parsed += size
        if self._head_bytes_parsed > MAX_HEAD_BYTES:
            raise HeadRefused(TOO_MANY_BYTES)

    # --- answers ---

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._ending and not self._owes_responses() and not self.transport.is_closing():
            self._end_now()

    def _refuse(self, message: str) -> None:
        """Answer 431 in the error envelope and close: the rest of the head is never read."""
        request_id = new_id().hex
        logger.info("request head refused: %s", message, extra={"request_id": request_id})
        body = envelope(HEAD_TOO_LARGE_CODE, message, request_id)
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-request-id", request_id.encode()),
            *EVERY_RESPONSE,
        ]
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self._end(STATUS_LINE_431 + lines + b"\r\n" + body)

    def _end(self, last_words: bytes = b"") -> None:
        """Write ``last_words`` and close, as soon as the responses owed to earlier requests are out.

        Requests pipelined ahead of the one that broke a limit are answered first, in order; until then
        whatever else the client sends is ignored.
        """
        self._cancel_head_deadline()
        self._ending = True
        self._last_words = last_words
        if not self._owes_responses():
            self._end_now()

    def _drop(self, reason: str) -> None:
        """Close at once, unanswered: the request at fault is the one in flight, which can never complete."""
        logger.info("connection dropped: %s", reason)
        self._cancel_head_deadline()
        self._ending = True
        self.transport.close()

    def _end_now(self) -> None:
        if self._last_words:
            self.transport.write(self._last_words)
        self.transport.close()

    def _owes_responses(self) -> bool:
        in_flight = self.cycle is not None and not self.cycle.response_complete
        return in_flight or bool(self.pipeline)

    # --- the head deadline ---

    def _start_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_timed_out)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        self._end()
