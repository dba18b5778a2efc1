"""JSON POSTs to one origin over kept-alive HTTP/1.1 connections: the model call's client.

A model call is the worker's one HTTP request per event, always the same shape: a POST of a
JSON body to one URL with the same headers. Through aiohttp's client it cost about 100 µs of
the worker's CPU (request and response objects, header multidicts, timers, the payload and
writer layers), twice what the same exchange costs written directly on an asyncio protocol
with llhttp (httptools) parsing the answer, 50 µs (both measured against the AI simulator, 256
calls at once; issue 16). So :class:`JsonPoster` keeps, per origin, a pool of idle
connections and sends each request as one write: the request line and the constant headers
(authentication included) encoded once, then ``Content-Length``, the trace context of the
call, and the body.

An answer without Content-Length or chunked framing is read to the connection's close (as
HTTP/1.0 servers and some proxies answer); an interim 1xx answer is skipped for the final one.
What it does not do, because a provider's API does not need it: redirects (a 3xx answers as
an error), proxies (the aiohttp session it replaces had ``trust_env`` off too), compression
(no ``Accept-Encoding`` is sent; a gzip or deflate answer is still decoded), cookies. TLS is
``ssl.create_default_context()``'s: certificates verified against the system's roots.

Failures map onto the exception tree as :func:`agents.outbound.http.request_json`'s do (the
same messages): a connect that takes longer than ``connect_timeout_s`` and an answer later than
the call's ``timeout_s`` are retriable, as is a connection reset or closed before the answer
is whole; a non-2xx status is :func:`agents.outbound.http.status_error`'s.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

from agents.outbound.http import json_answer, status_error
from schemas.errors import RetriableRemoteError
from schemas.tracecontext import TRACEPARENT, TRACESTATE, current

# Idle connections kept per origin at most (more are closed when their answer is read).
MAX_IDLE = 512


@functools.cache
def _tls() -> ssl.SSLContext:
    """One context per process: building one reads the CA store."""
    return ssl.create_default_context()


# Headers that frame an answer's body; without either, the body runs to the connection's close.
_FRAMING = (b"content-length", b"transfer-encoding")

# (status, raw headers, body) of one answer
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class _Lost(Exception):
    """The connection closed, or sent what is not HTTP, before the answer was whole."""


class _Connection(asyncio.Protocol):
    """One connection: at most one request on it at a time, its answer parsed as it comes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self._body: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        # The answer's head is read and it has neither Content-Length nor Transfer-Encoding:
        # its body ends where the connection does (RFC 9112 6.3, what HTTP/1.0 servers and
        # some proxies send), so a close then completes it instead of failing it.
        self._until_close = False

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(_Lost(f"not an HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._until_close and exc is None:
            self._until_close = False
            self.on_message_complete()  # the close delimits the body: the answer is whole
            return
        self._fail(_Lost(f"connection closed ({exc or 'by the server'})"))

    # httptools' side
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self._until_close = not (
            100 <= status < 200
            or status in (204, 304)
            or any(name.lower() in _FRAMING for name, _ in self._headers)
        )

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._until_close = False
        if 100 <= self.parser.get_status_code() < 200:
            # An interim answer (100 Continue, 103 Early Hints): the final one follows.
            self._headers, self._body = [], []
            return
        waiter, self.waiter = self.waiter, None
        body, self._body = b"".join(self._body), []
        headers, self._headers = self._headers, []
        if not self.parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), headers, body))

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def send(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise _Lost("connection closed before the request was sent")
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class JsonPoster:
    """POSTs of JSON bodies to ``url``, with ``headers`` on each, over a pool of connections."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        what: str,
        stage: str,
        connect_timeout_s: float,
    ) -> None:
        """``what`` names the peer in errors (never the URL's query or the headers, which may
        hold credentials)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{what}: not an http(s) URL")
        self.what, self.stage = what, stage
        self.connect_timeout_s = connect_timeout_s
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default = self._port == (443 if self._tls else 80)
        host = self._host if ":" not in self._host else f"[{self._host}]"
        authority = host if default else f"{host}:{self._port}"
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {authority}",
            "Content-Type: application/json",
            "Accept: application/json",
            "User-Agent: hookstream",
        ]
        for name, value in headers.items():
            if any(c in f"{name}{value}" for c in "\r\n\0"):
                raise ValueError(f"{what}: header {name} holds a line break")
            lines.append(f"{name}: {value}")
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._idle: list[_Connection] = []

    async def post(self, body: bytes, *, timeout_s: float) -> tuple[int, object]:
        """(status, parsed JSON or None) of a 2xx answer; raises RemoteError subclasses."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Answer] = loop.create_future()
        timer = loop.call_later(timeout_s, _expire, waiter)
        connection: _Connection | None = None
        try:
            connection = await self._connection(waiter)
            extra = b""
            trace = current()
            if trace is not None:
                extra = f"{TRACEPARENT}: {trace.traceparent()}\r\n".encode()
                if trace.state:
                    extra += f"{TRACESTATE}: {trace.state}\r\n".encode()
            connection.waiter = waiter
            connection.send(
                b"%sContent-Length: %d\r\n%s\r\n%s" % (self._head, len(body), extra, body)
            )
            status, headers, raw = await waiter
        except TimeoutError as exc:
            raise RetriableRemoteError(
                f"{self.what}: no answer within {timeout_s:g} s", stage=self.stage
            ) from exc
        except (OSError, _Lost) as exc:
            raise RetriableRemoteError(
                f"{self.what}: {type(exc).__name__}: {exc}", stage=self.stage
            ) from exc
        finally:
            timer.cancel()
            if connection is not None and connection.waiter is waiter:
                connection.waiter = None
                connection.close()  # given up on (timed out, cancelled): its answer may come
        if not connection.closed and len(self._idle) < MAX_IDLE:
            self._idle.append(connection)
        elif not connection.closed:
            connection.close()
        coding = next((v for k, v in headers if k.lower() == b"content-encoding"), b"").lower()
        if raw and coding in (b"gzip", b"deflate"):
            raw = zlib.decompress(raw, 31 if coding == b"gzip" else 15)
        if not 200 <= status < 300:
            named = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
            raise status_error(self.what, status, raw, named, stage=self.stage)
        return json_answer(status, raw)

    async def _connection(self, waiter: asyncio.Future[Answer]) -> _Connection:
        """An idle connection, else a new one (connecting within ``connect_timeout_s`` and
        before the call's deadline, which sets ``waiter``'s TimeoutError)."""
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        loop = asyncio.get_running_loop()
        connect = asyncio.ensure_future(
            loop.create_connection(
                _Connection,
                self._host,
                self._port,
                ssl=_tls() if self._tls else None,
                server_hostname=self._host if self._tls else None,
            )
        )
        racing: list[asyncio.Future[Any]] = [connect, waiter]
        given_up = True  # unless the connect completes below
        try:
            await asyncio.wait(
                racing, timeout=self.connect_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            given_up = not connect.done()
        finally:
            if given_up:  # too slow, the call's deadline came first, or the call was cancelled
                connect.cancel()
                connect.add_done_callback(_close_late)
        if given_up:
            if waiter.done():
                waiter.result()  # the call's own deadline: its TimeoutError
            raise RetriableRemoteError(
                f"{self.what}: could not connect within {self.connect_timeout_s:g} s",
                stage=self.stage,
            )
        _, connection = connect.result()
        return connection

    def close(self) -> None:
        """Close the idle connections (those in use close when their answer is read)."""
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def _expire(waiter: asyncio.Future[Answer]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _close_late(connect: asyncio.Future[tuple[asyncio.Transport, _Connection]]) -> None:
    """A connect given up on that completed anyway: its connection is closed."""
    if not connect.cancelled() and connect.exception() is None:
        connect.result()[1].close()
