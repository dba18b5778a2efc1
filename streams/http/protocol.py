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
- ``Expect: 100-continue`` answered only once the head has passed the application's checks
  and the requests before it are answered;
- a head over :data:`MAX_HEAD_BYTES` is refused with 431 (counted on the wire too, so one
  endless header value cannot grow the parser's buffer), chunk framing and trailers over
  :data:`MAX_FRAMING_BYTES` with 413, a malformed request with 400, all closing the connection;
- a head still incomplete ``idle_timeout_s`` after its first byte is dropped (slow-header
  attacks), a body still incomplete ``body_timeout_s`` after its head gets 408, and a
  connection idle for ``idle_timeout_s`` between requests is closed; none of these clocks run
  while the server itself has stopped reading;
- flow control: no request is handled and no answer written while the client does not read its
  answers; reading stops meanwhile, and while :data:`MAX_QUEUED` complete requests wait for
  their turn;
- graceful close: stop listening, close idle connections, let a request that is arriving
  finish, answer what was received, then close the rest.

What it leaves out: protocol upgrades (WebSocket, h2c: refused with 400), HTTP/2, streamed
bodies, trailers (read, then ignored).

The application (:class:`~streams.http.message.Application`) sees a request twice: its head
first (``check_head``: route, limits, anything that needs no body; a response refuses it), then
whole (``handle``), and answers with a response or an awaitable of one. Returning a future
answers from its callback, with no task per request. The types and codecs are in
:mod:`streams.http.message`, the listening side in :mod:`streams.http.server`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Protocol, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from schemas.clock import Clock
from schemas.errors import (
    BodyTimeout,
    MalformedRequest,
    PayloadTooLarge,
    RequestHeadTooLarge,
    WebhookRejected,
)
from streams.http.message import (
    CONTINUE,
    Application,
    Limits,
    Request,
    Response,
    decode_body,
    encode_response,
    framing_error,
    header_text,
    internal_error,
    placeholder,
    request_path,
)

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line and headers together; aiohttp allows 8 KiB a line
MAX_HEADERS = 128  # aiohttp's default as well
MAX_FRAMING_BYTES = 64 * 1024  # a chunked body's size lines and trailers, beyond its data
MAX_QUEUED = 32  # complete requests waiting behind the one being answered: reading pauses
# One read can hold thousands of small pipelined requests (reading pauses only between
# reads): past this many waiting, the rest of the read is dropped and the connection closes
# once those are answered, as with Connection: close.
MAX_PIPELINED = 128
LINGER_S = 5.0  # after the last answer, how long what a client still sends is read and dropped


class _Stop(Exception):
    """Raised from a parser callback to drop what follows in the buffer being parsed."""


class ConnectionHost(Protocol):
    """What a connection needs of the server that accepted it (:class:`streams.http.server.
    HttpServer`), named here so that this module does not import the server's."""

    app: Application
    limits: Limits
    closing: bool
    date_line: bytes
    requests_count: int
    connections: set[Connection]

    @property
    def clock(self) -> Clock: ...

    def forget(self, connection: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection: parses its requests and writes their answers in order."""

    def __init__(self, server: ConnectionHost) -> None:
        self._server = server
        self._app = server.app
        self._limits = server.limits
        # The event loop in production: self._clock.time() is the loop.time() call it was
        # before the clock could be injected (measured: a bound method kept instead costs more).
        self._clock = server.clock
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None
        # The request being received.
        self._messages = 0  # requests begun on this connection
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0  # of the parts the parser handed over
        self._head_wire_bytes = 0  # read while the head was incomplete, after its first read
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._framing_bytes = 0  # read in the body phase that were not body data
        self._request: Request | None = None  # set once its head is complete
        self._refusal: Response | None = None  # the head was refused: its body is discarded
        self._continue_due = False  # its 100 Continue waits for the requests before it
        self._began_s: float | None = None  # when its first byte came; None between requests
        self._head_done_s = 0.0
        # Requests received, not answered yet.
        self._queue: collections.deque[tuple[Request, Response | None]] = collections.deque()
        self._busy: Request | None = None  # the one whose answer is awaited
        # The last request begun or answer written: idle is measured from it (not from the
        # last byte read, or empty lines between requests would keep a connection forever).
        self._last_s = self._clock.time()
        self._closing = False  # no further request is read; close once the queue is answered
        self._eof = False  # the client will send nothing more
        self._reading_paused_s: float | None = None
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
        self._server.forget(self)
        self._closing = True
        self._queue.clear()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # answered for the last time, or will be: what still comes is dropped
        messages, request, body_bytes = self._messages, self._request, self._body_bytes
        in_head = self._began_s is not None and request is None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):  # a bug in a callback: say so, close
                log.error("the HTTP layer failed", exc_info=exc.__context__ or exc)
                self._answer_now_and_close(placeholder(self._peer), internal_error(exc))
            return
        except httptools.HttpParserUpgrade:
            return  # refused in on_headers_complete; nothing after it is read
        except httptools.HttpParserError as exc:
            self._fail(MalformedRequest(f"the request is not valid HTTP/1.1: {_reason(exc)}"))
            return
        if self._closing or self._messages != messages or self._request is not request:
            return
        # The whole read went to the same request's head, or to its body phase. The parser
        # hands a header over only once it is complete and buffers it meanwhile, so the
        # limits are also held on the bytes read.
        if in_head and self._began_s is not None:
            self._head_wire_bytes += len(data)
            if self._head_wire_bytes > MAX_HEAD_BYTES:
                self._fail(
                    RequestHeadTooLarge(f"the request's head is over {MAX_HEAD_BYTES} bytes")
                )
        elif request is not None:
            self._framing_bytes += len(data) - (self._body_bytes - body_bytes)
            if self._framing_bytes > MAX_FRAMING_BYTES:
                self._fail(
                    PayloadTooLarge(
                        f"the chunked body's size lines and trailers are over "
                        f"{MAX_FRAMING_BYTES} bytes; send larger chunks"
                    ),
                    request,
                )

    def eof_received(self) -> bool:
        """The client will send nothing more: answer what it sent, then close (True keeps
        the transport open for those answers).

        Over TLS, asyncio closes the connection on the client's close_notify whatever this
        returns (and warns when it is True): answers still owed are lost. A webhook accepted
        that way has no 202, its sender retries, and dedupe makes the retry one event.
        """
        self._eof = True
        self._closing = True
        transport = self._transport
        if transport is None or transport.get_extra_info("sslcontext") is not None:
            return False
        return self._owes_answers()

    def pause_writing(self) -> None:
        """The client is not reading its answers: stop handling and reading its requests."""
        self._writing_paused_s = self._clock.time()
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused_s = None
        self._pump()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._closing:
            raise _Stop
        self._messages += 1
        self._began_s = self._last_s = self._clock.time()
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._head_wire_bytes = 0
        self._body = []
        self._body_bytes = 0
        self._framing_bytes = 0
        self._refusal = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._fail(RequestHeadTooLarge(f"the request line is over {MAX_HEAD_BYTES} bytes"))
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._request is not None:
            return  # a chunked body's trailer (counted as framing): not part of the head
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES or len(self._headers) >= MAX_HEADERS:
            self._fail(
                RequestHeadTooLarge(
                    f"the request's head is over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers"
                )
            )
            raise _Stop
        try:  # UTF-8 (what senders sign), else ISO-8859-1: inline, a call costs more
            self._headers.append((name.decode("latin-1"), value.decode()))
        except UnicodeDecodeError:
            self._headers.append((name.decode("latin-1"), header_text(value)))

    def on_headers_complete(self) -> None:
        parser = self._parser
        request = Request(
            parser.get_method().decode("ascii"),
            request_path(self._url),
            CIMultiDictProxy(CIMultiDict(self._headers)),
            self._peer,
            parser.get_http_version(),
            target=self._url,
        )
        self._request = request
        self._head_done_s = self._clock.time()
        if parser.should_upgrade():
            self._fail(MalformedRequest("protocol upgrades are not supported"), request)
            raise _Stop
        refusal = self._app.check_head(request)
        if refusal is None:
            error = framing_error(request.headers, self._limits.max_body_bytes)
            if error is not None:
                refusal = self._app.refuse(request, error)
        expects = request.headers.get("Expect", "").lower() == "100-continue"
        if refusal is not None:
            self._refusal = refusal
            # A sender waiting for 100 Continue, or about to send more than the limit, gets
            # the refusal now and the connection closes: its body is never read.
            if expects or refusal.status == 413:
                self._answer_now_and_close(request, refusal)
                raise _Stop
            return
        if expects and request.http_version == "1.1":
            self._continue_due = True
            if not self._owes_answers():
                self._send_continue()

    def on_body(self, chunk: bytes) -> None:
        self._continue_due = False  # the sender did not wait for it
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
        self._continue_due = False
        queue = self._queue
        keep_alive = (
            self._parser.should_keep_alive()
            and not self._server.closing
            and len(queue) < MAX_PIPELINED - 1
        )
        request.keep_alive = keep_alive
        if not keep_alive:
            self._closing = True  # this is the connection's last request
        refusal = self._refusal
        if refusal is None:  # still encoded: decoded at its turn (see _decoded)
            request.body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        queue.append((request, refusal))
        if self._busy is None:
            self._pump()
        if len(queue) >= MAX_QUEUED:
            self._pause_reading()

    # answering

    def _pump(self) -> None:
        """Answer queued requests in order until one has to be waited for, or the client
        stops reading its answers."""
        queue = self._queue
        while (
            queue
            and self._busy is None
            and self._writing_paused_s is None
            and self._transport is not None
        ):
            request, refusal = queue.popleft()
            if refusal is None:
                refusal = self._decoded(request)
            if refusal is not None:
                self._write(request, refusal)
                continue
            try:
                result = self._app.handle(request)
            except Exception as exc:  # a bug: answer it rather than leave the sender waiting
                log.exception("the gateway failed %s %s", request.method, request.path)
                result = internal_error(exc)
            if isinstance(result, Response):
                self._write(request, result)
                continue
            self._busy = request  # before the callback can run (a done future's runs soon)
            try:
                future = (
                    result if isinstance(result, asyncio.Future) else asyncio.ensure_future(result)
                )
            except TypeError as exc:  # neither a Response nor an awaitable: a bug
                self._busy = None
                log.error(
                    "the gateway answered %s %s with %r", request.method, request.path, result
                )
                self._write(request, internal_error(exc))
                continue
            future.add_done_callback(self._finished)
        if self._transport is None:
            return
        if self._continue_due and self._busy is None and not queue:
            self._send_continue()  # the request waiting for it is next now
        if len(queue) < MAX_QUEUED and self._writing_paused_s is None:
            self._resume_reading()

    def _decoded(self, request: Request) -> Response | None:
        """Decode the body of the request whose turn it is (None), or refuse it.

        At its turn rather than on arrival: a pipelined queue of compressed bodies would
        otherwise hold all of them decoded at once, up to the limit each, from a few bytes each
        on the wire.
        """
        coding = request.headers.get("Content-Encoding")
        if coding is None or not request.body:
            return None
        try:
            request.body = decode_body(
                request.body, coding.strip().lower(), self._limits.max_body_bytes
            )
        except WebhookRejected as exc:
            return self._app.refuse(request, exc)
        return None

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
        response = future.result() if error is None else None
        if not isinstance(response, Response):
            error = error or TypeError(f"an answer of type {type(response).__name__}")
            log.error("the gateway failed %s %s", request.method, request.path, exc_info=error)
            response = internal_error(error)
        self._write(request, response)
        self._pump()

    def _write(self, request: Request, response: Response) -> None:
        transport = self._transport
        if transport is None:
            return
        close = not request.keep_alive or (self._closing and not self._queue)
        date_line = self._server.date_line
        try:
            data = encode_response(request, response, close=close, date_line=date_line)
        except Exception as exc:  # e.g. a header that is not ISO-8859-1: a bug, answer it
            log.exception("the gateway's answer to %s %s", request.method, request.path)
            data = encode_response(request, internal_error(exc), close=close, date_line=date_line)
        transport.write(data)
        self._server.requests_count += 1
        self._last_s = self._clock.time()
        if close:
            self._closing = True
            self._queue.clear()
            self._linger(transport)

    def _send_continue(self) -> None:
        """Ask for the body; the body's clock starts now (the sender was right to wait)."""
        self._continue_due = False
        if self._transport is not None and self._request is not None and not self._body_bytes:
            self._transport.write(CONTINUE)
            self._head_done_s = self._clock.time()

    def _answer_now_and_close(self, request: Request, response: Response) -> None:
        """Answer ahead of the body (or instead of it), then close: used for refusals."""
        request.keep_alive = False
        self._closing = True
        self._began_s = None
        self._request = None
        self._continue_due = False
        self._queue.append((request, response))
        if self._busy is None:
            self._pump()

    def _fail(self, error: WebhookRejected, request: Request | None = None) -> None:
        """A refusal the server makes itself; the connection closes after it."""
        response = self._app.refuse(request, error)
        self._answer_now_and_close(request or placeholder(self._peer), response)

    # lifecycle

    def check_timeouts(self, now_s: float) -> None:
        limits = self._limits
        began_s = self._began_s
        if self._lingering_since_s is not None:
            if now_s - self._lingering_since_s > LINGER_S:
                self.abort()
        elif self._writing_paused_s is not None:
            if now_s - self._writing_paused_s > limits.idle_timeout_s:
                self.abort()  # the client stopped reading its answers
        elif self._reading_paused_s is not None or self._continue_due:
            return  # we stopped reading, or have not asked for the body yet: not late
        elif began_s is not None:
            if self._request is None:  # the head is still arriving
                if now_s - began_s > limits.idle_timeout_s:
                    # Dropped without an answer; those owed for earlier requests are written
                    # (the last says Connection: close).
                    self._began_s = None
                    self._close_when_answered()
            elif now_s - self._head_done_s > limits.body_timeout_s:
                self._fail(
                    BodyTimeout(
                        f"the body did not arrive within {limits.body_timeout_s:g} s of the "
                        "headers; send it again"
                    ),
                    self._request,
                )
        elif not self._owes_answers() and now_s - self._last_s > limits.idle_timeout_s:
            self.close()

    def drain(self) -> None:
        """Shutting down: close now if idle, else once what was received is answered. A
        request that is arriving is read to its end first (its answer closes)."""
        if self._began_s is not None:
            return  # on_message_complete sees server.closing: keep_alive False
        self._close_when_answered()

    def _close_when_answered(self) -> None:
        """Read no further request; close now if no answer is owed, else after the last one
        (written with Connection: close, then lingering)."""
        self._closing = True
        if not self._owes_answers() and self._lingering_since_s is None:
            self.close()

    def _owes_answers(self) -> bool:
        return self._busy is not None or bool(self._queue)

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close without losing the last answer.

        Closing a socket whose client is still sending (a refused body, a pipelined request)
        makes the kernel reset the connection, and a reset can reach the client before it has
        read the answer. So the writing side is shut after the answer (FIN), what still
        arrives is read and dropped, and the connection closes when the client closes its side
        or after LINGER_S on the server's clock (aiohttp and nginx do the same). When the client
        has already closed its side, or the transport cannot half-close (TLS), it closes once
        the answer is out.
        """
        self._lingering_since_s = self._clock.time()
        if self._eof or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _pause_reading(self) -> None:
        if self._reading_paused_s is None and self._transport is not None:
            self._reading_paused_s = self._clock.time()
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        """Read again; the head and body clocks skip the time we were not reading."""
        paused_s = self._reading_paused_s
        if paused_s is not None and self._transport is not None:
            self._reading_paused_s = None
            self._transport.resume_reading()
            paused_for_s = self._clock.time() - paused_s
            if self._began_s is not None:
                self._began_s += paused_for_s
            self._head_done_s += paused_for_s


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
