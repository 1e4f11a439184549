"""One client connection of appliance.api.httpd: read a request under total deadlines and size limits
(h11 parses), hand the complete request to the server's dispatch, write the answer under a deadline,
repeat while keep-alive allows. Every limit that is hit ends in a small JSON error answer, or, when
there is nobody to answer, a silent close; each is logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from typing import TYPE_CHECKING, Protocol

import h11

from appliance.api.httpd_wsgi import Peer, Reply, error_reply, response_events

if TYPE_CHECKING:
    from appliance.api.httpd import Limits

logger = logging.getLogger("appliance.api.httpd")

READ_CHUNK = 64 * 1024
LINGER_SECONDS = 1.0  # after an error answer, read and drop what the client still sends, so no RST eats it
LINGER_BYTES = 4 * 1024 * 1024
# h11 quotes the offending bytes (b'...'): they may be a credential, so they reach neither log nor answer.
_QUOTED_BYTES = re.compile(r":?\s*(bytearray\()?b['\"].*$", re.DOTALL)


class Host(Protocol):
    """What a connection needs from the server."""

    limits: Limits
    ssl_context: ssl.SSLContext | None
    stopping: bool

    async def dispatch(self, request: h11.Request, body: bytes, peer: Peer) -> Reply: ...


class _Reject(Exception):
    """End the connection with a server-made error answer (then close)."""

    def __init__(self, status: int, message: str, level: int = logging.INFO) -> None:
        super().__init__(message)
        self.status, self.message, self.level = status, message, level


class _Drop(Exception):
    """End the connection at once, without an answer (already logged)."""


class Connection:
    """One client connection: read a request, answer it, repeat while keep-alive allows."""

    def __init__(self, core: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 remote: tuple[str, int]) -> None:
        self.core, self.reader, self.writer = core, reader, writer
        self.limits = core.limits
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=core.limits.max_header_bytes)
        local = writer.get_extra_info("sockname") or ("", 0)
        self.peer = Peer(remote=remote, local=(str(local[0]), int(local[1])), tls=core.ssl_context is not None)
        self.label = f"{remote[0]}:{remote[1]}"
        self.busy = False  # a complete request is with the app, or its answer is being written

    async def run(self) -> None:
        try:
            await self._converse()
        except _Drop:
            pass
        except (OSError, EOFError) as exc:  # resets, TLS alerts: the client's doing
            logger.debug("httpd: %s: connection lost: %s", self.label, exc)
        finally:
            _abort(self.writer.transport)

    async def _converse(self) -> None:
        try:
            if self.core.ssl_context is not None:
                await self._handshake(self.core.ssl_context)
            await self._serve()
        except _Reject as reject:
            logger.log(reject.level, "httpd: %s: %d %s", self.label, reject.status, reject.message)
            await self._reject(reject)
        await self._close()

    async def _handshake(self, context: ssl.SSLContext) -> None:
        timeout = self.limits.handshake_timeout
        try:
            async with asyncio.timeout(timeout + 1.0):
                await self.writer.start_tls(context, ssl_handshake_timeout=timeout)
        except (TimeoutError, OSError) as exc:
            logger.info("httpd: %s: dropped: no TLS handshake within %.1f s (%s)", self.label, timeout, exc)
            raise _Drop from exc
        self.peer = Peer(self.peer.remote, self.peer.local, True, self.writer.get_extra_info("peercert"))

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        for served in range(1, self.limits.max_requests_per_connection + 1):
            request = await self._read_head(loop, first=served == 1)
            if request is None:
                return
            body = await self._read_body(loop, request)
            self.busy = True
            reply = await self.core.dispatch(request, body, self.peer)
            last = served == self.limits.max_requests_per_connection or self.core.stopping
            await self._send(self._events(reply, request, close=last))
            self.busy = False
            if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                return  # Connection: close (either side), HTTP/1.0
            self.conn.start_next_cycle()

    async def _read_head(self, loop: asyncio.AbstractEventLoop, *, first: bool) -> h11.Request | None:
        """The next request's head, or None when the client closes or stays idle too long."""
        now = loop.time()
        received = bool(self.conn.trailing_data[0])  # a pipelined request may be waiting already
        # header_timeout runs from the connection's start, or from the first byte of a later request.
        head_deadline = now + self.limits.header_timeout if first or received else None
        idle_deadline = now + self.limits.idle_timeout
        while True:
            event = self._next_event()
            if isinstance(event, h11.Request):
                self._check_head(event)
                return event
            if event is not h11.NEED_DATA:  # ConnectionClosed (PAUSED cannot happen here)
                return None
            try:
                got = await self._receive(idle_deadline if head_deadline is None else head_deadline)
            except TimeoutError:
                if not received:
                    logger.debug("httpd: %s: closed: idle", self.label)
                    return None
                raise _Reject(408, f"request head not complete within {self.limits.header_timeout:g} s") from None
            received = received or bool(got)
            if got and head_deadline is None:
                head_deadline = loop.time() + self.limits.header_timeout

    def _events(self, reply: Reply, request: h11.Request, *, close: bool) -> list[h11.Event]:
        head = request.method == b"HEAD"
        try:
            return response_events(reply, head=head, close=close)
        except h11.LocalProtocolError:  # the app's status or headers are not valid HTTP
            logger.exception("httpd: %s %r: invalid answer from the application", request.method, request.target)
            return response_events(error_reply(500, "internal server error"), head=head, close=close)

    def _check_head(self, request: h11.Request) -> None:
        # h11 bounds only an incomplete head; a complete one that arrived in a single read is measured here.
        size = len(request.method) + len(request.target) + 12
        size += sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items())
        if size > self.limits.max_header_bytes:
            raise _Reject(431, f"request head of {size} bytes exceeds {self.limits.max_header_bytes} bytes")

    async def _read_body(self, loop: asyncio.AbstractEventLoop, request: h11.Request) -> bytes:
        limit = self.limits.max_body_bytes
        declared = _content_length(request)
        if declared is not None and declared > limit:
            raise _Reject(413, f"request body of {declared} bytes exceeds {limit} bytes")
        if self.conn.they_are_waiting_for_100_continue:
            await self._send([h11.InformationalResponse(status_code=100, headers=[])])
        deadline = loop.time() + self.limits.body_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self._next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _Reject(413, f"request body exceeds {limit} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            elif event is h11.NEED_DATA:
                try:
                    await self._receive(deadline)
                except TimeoutError:
                    raise _Reject(408, f"request body not complete within {self.limits.body_timeout:g} s") from None
            else:
                raise _Reject(400, "unexpected end of the request body")

    def _next_event(self) -> object:
        try:
            return self.conn.next_event()
        except h11.RemoteProtocolError as exc:
            if self.conn.trailing_data[1]:  # the client closed mid-request: nobody to answer
                logger.debug("httpd: %s: closed by the client mid-request", self.label)
                raise _Drop from None
            raise _Reject(exc.error_status_hint, f"malformed request: {_describe(exc)}") from None

    async def _receive(self, deadline: float) -> bytes:
        async with asyncio.timeout_at(deadline):
            data = await self.reader.read(READ_CHUNK)
        self.conn.receive_data(data)  # b"" tells h11 the client closed
        return data

    async def _send(self, events: list[h11.Event]) -> None:
        self.writer.write(b"".join(self.conn.send(event) or b"" for event in events))
        try:
            async with asyncio.timeout(self.limits.write_timeout):
                await self.writer.drain()
        except TimeoutError:
            logger.info("httpd: %s: dropped: answer not read within %g s", self.label, self.limits.write_timeout)
            raise _Drop from None

    async def _reject(self, reject: _Reject) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            raise _Drop  # an answer is under way already: nothing can be added
        await self._send(response_events(error_reply(reject.status, reject.message), head=False, close=True))
        await self._linger()

    async def _linger(self) -> None:
        """Read and drop what the client still sends for a moment: closing on unread data sends a RST,
        which can destroy the error answer before the client reads it."""
        if self.writer.can_write_eof():
            self.writer.write_eof()
        dropped = 0
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                while dropped < LINGER_BYTES and (data := await self.reader.read(READ_CHUNK)):
                    dropped += len(data)
        except (TimeoutError, OSError):
            pass

    async def _close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(self.limits.write_timeout):
                await self.writer.wait_closed()
        except (TimeoutError, OSError):
            pass


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None


def _describe(exc: h11.RemoteProtocolError) -> str:
    return _QUOTED_BYTES.sub("", str(exc)) or "unparsable"


def _abort(transport: asyncio.BaseTransport) -> None:
    """Drop the connection now. An SSL transport whose handshake failed is already half torn down
    (asyncio's sslproto then raises AttributeError from abort()): nothing is left to drop."""
    try:
        transport.abort()  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError, OSError):
        with contextlib.suppress(AttributeError, RuntimeError, OSError):
            transport.close()
