"""The gateway's HTTP/1.1 server: llhttp (through httptools) parsing on an asyncio protocol.

Why not aiohttp's server, which the gateway used until session 4: a bare aiohttp handler costs
~219 k instructions per request, this protocol answering the same request ~29 k
(bench/gateway/NOTES.md). That difference was more than half of a webhook's whole cost. The
gateway serves five fixed routes with small bodies held in memory and answers of a few hundred
bytes; what aiohttp spends on is what it offers beyond that (a task, a request object with a
stream, a response object with its own header map, per request).

What this server does:

- keep-alive (the HTTP/1.1 default; HTTP/1.0 with ``Connection: keep-alive``), and pipelined
  requests answered one at a time, in order;
- bodies framed by Content-Length or chunked, ``Content-Encoding`` gzip and deflate decoded,
  the limit held both on the wire and once decoded (413);
- ``Expect: 100-continue`` answered only once the head has passed the application's checks;
- a head over :data:`MAX_HEAD_BYTES` is refused with 431, a malformed request with 400, both
  closing the connection;
- a head still incomplete ``idle_timeout_s`` after its first byte is dropped (slow-header
  attacks), a body still incomplete ``body_timeout_s`` after its head gets 408, and a
  connection idle for ``idle_timeout_s`` between requests is closed;
- flow control: reading stops while the client does not read its answers, or while
  :data:`MAX_QUEUED` complete requests wait for their turn;
- graceful close: stop listening, close idle connections, answer what is in progress, then
  close the rest.

What it leaves out: protocol upgrades (WebSocket, h2c: refused with 400), HTTP/2, streamed
bodies, trailers (ignored).

The application (:class:`Application`) sees a :class:`Request` twice: its head first
(``check_head``: route, limits, anything that needs no body; a :class:`Response` refuses it),
then whole (``handle``), and answers with a :class:`Response` or an awaitable of one. Returning
a future answers from its callback, with no task per request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol, cast
from urllib.parse import unquote

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from streams.errors import (
    BodyTimeout,
    InvalidPayload,
    MalformedRequest,
    PayloadTooLarge,
    RequestHeadTooLarge,
    UnsupportedMediaType,
    WebhookRejected,
)

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line and headers together; aiohttp allows 8 KiB a line
MAX_HEADERS = 128  # aiohttp's default as well
MAX_QUEUED = 32  # complete requests waiting behind the one being answered (pipelining)
LINGER_S = 5.0  # after the last answer, how long what a client still sends is read and dropped
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus
}
_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass(slots=True, eq=False)
class Request:
    """One request; ``body`` is set once the whole of it has arrived (and been decoded).

    ``headers`` map case-insensitively, decoded as ISO-8859-1 (every byte is a character, so
    a header never fails to decode or to re-encode). ``context`` is the application's: what
    ``check_head`` found (e.g. the source) for ``handle`` to use.
    """

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    peer: str | None
    http_version: str
    body: bytes = b""
    keep_alive: bool = True
    context: Any = None


@dataclass(slots=True)
class Response:
    """An answer: Content-Length, Date and Connection are added when it is written."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] | None = None


class Application(Protocol):
    def check_head(self, request: Request) -> Response | None:
        """Before the body: a Response refuses the request, None lets its body be read."""

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        """The whole request: its answer, now or later."""

    def refuse(self, request: Request | None, error: WebhookRejected) -> Response:
        """The answer to a refusal the server itself makes (size, timeout, encoding, syntax)."""


@dataclass
class Limits:
    max_body_bytes: int
    body_timeout_s: float
    idle_timeout_s: float


class _Stop(Exception):
    """Raised from a parser callback to drop what follows in the buffer being parsed."""


class HttpServer:
    """The listening side: its connections, the shared clock and Date line, the timeouts."""

    def __init__(self, app: Application, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.connections: set[_Connection] = set()
        self.requests_count = 0  # answered requests, for tests and operators
        self.closing = False
        self._all_closed = asyncio.Event()  # set when closing and the last connection closed
        self.date_line = b""
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every_s = max(0.05, min(1.0, limits.body_timeout_s, limits.idle_timeout_s) / 2)

    async def listen(self, host: str, port: int, **kwargs: Any) -> asyncio.Server:
        """Start listening; ``kwargs`` go to ``loop.create_server`` (ssl, reuse_port, ...)."""
        loop = asyncio.get_running_loop()
        self._tick()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, **kwargs)
        return self._server

    @property
    def port(self) -> int:
        """The port listened on (the one the kernel chose, when asked for port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self, timeout_s: float) -> None:
        """Stop listening, let in-progress requests be answered (up to ``timeout_s``), close."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.drain()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
        for connection in list(self.connections):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            await self._server.wait_closed()

    def _tick(self) -> None:
        """Refresh the Date line and enforce the timeouts; runs a few times a second."""
        loop = asyncio.get_running_loop()
        self.date_line = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        now_s = loop.time()
        for connection in list(self.connections):
            connection.check_timeouts(now_s)
        self._sweeper = loop.call_later(self._sweep_every_s, self._tick)


class _Connection(asyncio.Protocol):
    """One client connection: parses its requests and writes their answers in order."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._app = server.app
        self._limits = server.limits
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None
        # The request being received.
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._request: Request | None = None  # set once its head is complete
        self._refusal: Response | None = None  # the head was refused: its body is discarded
        self._began_s: float | None = None  # when its first byte came; None between requests
        self._head_done_s = 0.0
        # Requests received, not answered yet.
        self._queue: collections.deque[tuple[Request, Response | None]] = collections.deque()
        self._busy: Request | None = None  # the one whose answer is awaited
        self._last_s = self._loop.time()  # the last byte in or answer out
        self._closing = False  # no further request is read; close once the queue is answered
        self._reading_paused = False
        self._writing_paused_s: float | None = None
        self._lingering_since_s: float | None = None  # answered for the last time, see _linger

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._peer = str(peer[0])
        self._server.connections.add(self)
        if self._server.closing:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        server = self._server
        server.connections.discard(self)
        if server.closing and not server.connections:
            server._all_closed.set()
        self._closing = True
        self._queue.clear()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_s = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):  # a bug in a callback: say so, close
                log.error("the HTTP layer failed", exc_info=exc.__context__ or exc)
                self._answer_now_and_close(_placeholder(self._peer), _internal_error(exc))
        except httptools.HttpParserUpgrade:
            pass  # refused in on_headers_complete; nothing after it is read
        except httptools.HttpParserError as exc:
            self._fail(MalformedRequest(f"the request is not valid HTTP/1.1: {_reason(exc)}"))

    def eof_received(self) -> bool:
        """The client will send nothing more: answer what it sent, then close (True keeps
        the transport open for those answers; over TLS asyncio closes regardless)."""
        self._closing = True
        return self._busy is not None or bool(self._queue)

    def pause_writing(self) -> None:
        """The client is not reading its answers: stop reading its requests meanwhile."""
        self._writing_paused_s = self._loop.time()
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused_s = None
        if len(self._queue) < MAX_QUEUED:
            self._resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._closing:
            raise _Stop
        self._began_s = self._loop.time()
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._body = []
        self._body_bytes = 0
        self._refusal = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._fail(RequestHeadTooLarge(f"the request line is over {MAX_HEAD_BYTES} bytes"))
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._request is not None:
            return  # a chunked body's trailer: not part of the request's head
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES or len(self._headers) >= MAX_HEADERS:
            self._fail(
                RequestHeadTooLarge(
                    f"the request's head is over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers"
                )
            )
            raise _Stop
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        request = Request(
            parser.get_method().decode("ascii"),
            _path(self._url),
            CIMultiDictProxy(CIMultiDict(self._headers)),
            self._peer,
            parser.get_http_version(),
        )
        self._request = request
        self._head_done_s = self._loop.time()
        if parser.should_upgrade():
            self._fail(MalformedRequest("protocol upgrades are not supported"), request)
            raise _Stop
        refusal = self._app.check_head(request)
        if refusal is None:
            refusal = self._check_framing(request)
        if refusal is not None:
            self._refusal = refusal
            # A sender waiting for 100 Continue, or about to send more than the limit, gets
            # the refusal now and the connection closes: its body is never read.
            expects = request.headers.get("Expect", "").lower() == "100-continue"
            if expects or refusal.status == 413:
                self._answer_now_and_close(request, refusal)
                raise _Stop
            return
        if (
            request.http_version == "1.1"
            and request.headers.get("Expect", "").lower() == "100-continue"
            and self._busy is None
            and not self._queue
            and self._transport is not None
        ):
            self._transport.write(_CONTINUE)

    def on_body(self, chunk: bytes) -> None:
        self._body_bytes += len(chunk)
        if self._body_bytes > self._limits.max_body_bytes:
            limit = self._limits.max_body_bytes
            self._fail(PayloadTooLarge(f"body exceeds the limit of {limit} bytes"), self._request)
            raise _Stop
        if self._refusal is None:
            self._body.append(chunk)

    def on_message_complete(self) -> None:
        request = self._request
        if request is None:  # cannot happen: llhttp completes only messages it began
            return
        self._request = None
        self._began_s = None
        keep_alive = self._parser.should_keep_alive() and not self._server.closing
        request.keep_alive = keep_alive
        if not keep_alive:
            self._closing = True  # this is the connection's last request
        refusal = self._refusal
        if refusal is None:
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            coding = request.headers.get("Content-Encoding")
            if coding is not None and body:
                try:
                    body = _decode(body, coding.strip().lower(), self._limits.max_body_bytes)
                except WebhookRejected as exc:
                    refusal = self._app.refuse(request, exc)
            request.body = body
        self._body = []
        self._queue.append((request, refusal))
        if self._busy is None:
            self._pump()
        elif len(self._queue) >= MAX_QUEUED:
            self._pause_reading()

    # answering

    def _pump(self) -> None:
        """Answer queued requests in order until one has to be waited for."""
        queue = self._queue
        while queue and self._busy is None and self._transport is not None:
            request, refusal = queue.popleft()
            if refusal is not None:
                self._write(request, refusal)
                continue
            try:
                result = self._app.handle(request)
            except Exception as exc:  # a bug: answer it rather than leave the sender waiting
                log.exception("the gateway failed %s %s", request.method, request.path)
                result = _internal_error(exc)
            if isinstance(result, Response):
                self._write(request, result)
                continue
            self._busy = request
            future = result if isinstance(result, asyncio.Future) else asyncio.ensure_future(result)
            future.add_done_callback(self._finished)
        if self._reading_paused and len(queue) < MAX_QUEUED and self._writing_paused_s is None:
            self._resume_reading()

    def _finished(self, future: asyncio.Future[Response]) -> None:
        request, self._busy = self._busy, None
        if request is None or self._transport is None:
            if not future.cancelled():
                future.exception()  # retrieved: the connection is gone, nobody to tell
            return
        if future.cancelled():
            self.abort()
            return
        error = future.exception()
        if error is not None:
            log.error("the gateway failed %s %s", request.method, request.path, exc_info=error)
            response = _internal_error(error)
        else:
            response = future.result()
        self._write(request, response)
        self._pump()

    def _write(self, request: Request, response: Response) -> None:
        transport = self._transport
        if transport is None:
            return
        close = not request.keep_alive or (self._closing and not self._queue)
        transport.write(self._encode(request, response, close))
        self._server.requests_count += 1
        self._last_s = self._loop.time()
        if close:
            self._closing = True
            self._queue.clear()
            self._linger(transport)

    def _encode(self, request: Request, response: Response, close: bool) -> bytes:
        body = response.body
        head = [
            _STATUS_LINES.get(response.status) or _status_line(response.status),
            b"Content-Type: %s\r\nContent-Length: %d\r\n"
            % (response.content_type.encode("latin-1"), len(body)),
            self._server.date_line,
        ]
        if response.headers:
            head.extend(
                f"{name}: {value}\r\n".encode("latin-1") for name, value in response.headers.items()
            )
        if close:
            head.append(b"Connection: close\r\n")
        elif request.http_version == "1.0":
            head.append(b"Connection: keep-alive\r\n")
        head.append(b"\r\n")
        if request.method != "HEAD":
            head.append(body)
        return b"".join(head)

    def _answer_now_and_close(self, request: Request, response: Response) -> None:
        """Answer ahead of the body (or instead of it), then close: used for refusals."""
        request.keep_alive = False
        self._closing = True
        self._began_s = None
        self._queue.append((request, response))
        if self._busy is None:
            self._pump()

    def _fail(self, error: WebhookRejected, request: Request | None = None) -> None:
        """A refusal the server makes itself; the connection closes after it."""
        if request is None:
            request = _placeholder(self._peer)
        self._answer_now_and_close(request, self._app.refuse(None, error))

    # lifecycle

    def check_timeouts(self, now_s: float) -> None:
        limits = self._limits
        began_s = self._began_s
        if self._lingering_since_s is not None:
            if now_s - self._lingering_since_s > LINGER_S:
                self.abort()
        elif began_s is not None:
            if self._request is None:  # the head is still arriving
                if now_s - began_s > limits.idle_timeout_s:
                    self.close()
            elif now_s - self._head_done_s > limits.body_timeout_s:
                request = self._request
                self._request = None
                self._fail(
                    BodyTimeout(
                        f"the body did not arrive within {limits.body_timeout_s:g} s of the "
                        "headers; send it again"
                    ),
                    request,
                )
        elif self._writing_paused_s is not None:
            if now_s - self._writing_paused_s > limits.idle_timeout_s:
                self.abort()  # the client stopped reading its answers
        else:
            idle = self._busy is None and not self._queue
            if idle and now_s - self._last_s > limits.idle_timeout_s:
                self.close()

    def drain(self) -> None:
        """Shutting down: close now if idle, else once what was received is answered."""
        self._closing = True
        if self._busy is None and not self._queue and self._lingering_since_s is None:
            self.close()

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close without losing the last answer.

        Closing a socket whose client is still sending (a refused body, a pipelined request)
        makes the kernel reset the connection, and a reset can reach the client before it has
        read the answer. So the writing side is shut after the answer (FIN), what still
        arrives is read and dropped, and the connection closes when the client closes its side
        or after LINGER_S (aiohttp and nginx do the same).
        """
        self._lingering_since_s = self._loop.time()
        if transport.can_write_eof():
            transport.write_eof()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()

    def _check_framing(self, request: Request) -> Response | None:
        """The server's own checks of a head the application accepted: size and encoding."""
        headers = request.headers
        length = headers.get("Content-Length")
        limit = self._limits.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            return self._app.refuse(
                request,
                PayloadTooLarge(f"body of {length} bytes exceeds the limit of {limit} bytes"),
            )
        coding = headers.get("Content-Encoding")
        if coding is not None:
            coding = coding.strip().lower()
            if coding not in _CODINGS and coding not in ("", "identity"):
                return self._app.refuse(
                    request,
                    UnsupportedMediaType(
                        f"Content-Encoding {coding!r} is not accepted; send the body as it "
                        "is, or gzip or deflate it"
                    ),
                )
        return None


def _path(url: bytes) -> str:
    """The request target's path, percent-decoded, as aiohttp's ``request.path`` gives it."""
    if url[:1] != b"/":  # absolute form ("http://host/path"), or "*"
        try:
            url = httptools.parse_url(url).path or b""
        except httptools.HttpParserInvalidURLError:
            return ""
    path = url.partition(b"?")[0]
    if b"%" in path:
        return unquote(path.decode("utf-8", "replace"))
    return path.decode("utf-8", "replace")


def _decode(body: bytes, coding: str, limit: int) -> bytes:
    """The body without its Content-Encoding, held to ``limit`` bytes once decoded."""
    wbits = _CODINGS.get(coding)
    if wbits is None:  # identity (other codings were refused with the head)
        return body
    plain = _inflate(body, wbits, limit)
    if plain is None and coding == "deflate":  # without its zlib wrapper, as some send it
        plain = _inflate(body, -zlib.MAX_WBITS, limit)
    if plain is None:
        raise InvalidPayload(
            f"the body is not valid {coding} (or is truncated)", code="invalid_encoding"
        )
    if len(plain) > limit:
        raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes once decompressed")
    return plain


def _inflate(data: bytes, wbits: int, limit: int) -> bytes | None:
    """Decompress every member (gzip allows several back to back), stopping past ``limit``
    bytes of output: a small bomb never costs more than the limit. None: not valid/complete."""
    parts: list[bytes] = []
    size = 0
    try:
        while data:
            decoder = zlib.decompressobj(wbits)
            part = decoder.decompress(data, limit + 1 - size)
            parts.append(part)
            size += len(part)
            if size > limit:
                break
            if not decoder.eof:
                return None
            data = decoder.unused_data
    except zlib.error:
        return None
    return b"".join(parts)


def _placeholder(peer: str | None) -> Request:
    """The request an answer is written for when none could be read (a malformed one)."""
    return Request("GET", "", CIMultiDictProxy(CIMultiDict()), peer, "1.1")


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} Unknown\r\n".encode()


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


def _internal_error(exc: BaseException) -> Response:
    detail = f"the gateway failed ({type(exc).__name__}); the event was not accepted"
    body = (
        b'{"type":"https://hookstream.dev/problems/internal_error","title":"Internal error",'
        b'"status":500,"detail":"%s","code":"internal_error"}' % detail.encode()
    )
    return Response(500, body, "application/problem+json")
