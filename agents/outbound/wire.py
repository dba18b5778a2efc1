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

The HTTP and Slack sinks send through the same client (issue 16: aiohttp's client side was
~27 % of the sink worker's CPU): :meth:`JsonPoster.request` takes the method (PUT, POST,
PATCH), the target and the headers of each request (the ``Idempotency-Key``), and
:class:`WireClient` keeps one :class:`JsonPoster` per origin of a templated URL. With
``public_only`` (a call the SSRF guard covers) a connection resolves the host itself and opens
only if every address is public, the address connected to being one of those checked, each
tried in turn (what :class:`agents.outbound.egress_guard.PublicOnlyResolver` does for aiohttp),
and a 3xx answers as :func:`agents.outbound.http.redirect_refused`'s error.

The HTTP lookups' GETs go through it too (issue 16: a lookup's client side cost 106 µs of CPU
through aiohttp, 41 µs through this client; bench/pipeline/lookup_client.py);
a GET without a body sends neither ``Content-Length`` nor the default ``Content-Type``, as
aiohttp did not. :func:`send_checked` is what a sink's or a lookup's request does: the SSRF
guard's check, the request, and for a call allowed private addresses that gets a 3xx, the
request again through aiohttp, which follows the redirect.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import ssl
import zlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import httptools
import orjson
from multidict import CIMultiDict

from agents.outbound.egress_guard import NetGuard, is_public, resolve
from agents.outbound.http import json_answer, redirect_refused, request_json, status_error
from schemas.errors import (
    PermanentRemoteError,
    RemoteError,
    RetriableRemoteError,
    UnsafeDestination,
)
from schemas.tracecontext import TRACEPARENT, TRACESTATE, current
from streams.metrics import tracing

# Idle connections kept per origin at most (more are closed when their answer is read).
MAX_IDLE = 512
# An idle connection older than this is closed instead of reused. Servers close idle
# keep-alive connections (Node's and uvicorn's default after 5 s): one reused as the server
# closes it fails its request (a retry, and for a sink its backoff). httpx expires them at 5 s,
# aiohttp at 15 s; below the common 5 s, a connection is never reused into that close.
IDLE_EXPIRY_S = 4.0
# Origins a WireClient keeps a pool for at most (a URL template may vary its host).
MAX_ORIGINS = 64
# The headers JsonPoster sends unless the caller's own name them (case-insensitively).
_DEFAULT_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "User-Agent": "hookstream",
}
# What a request target may hold as it is; anything else is percent-encoded first (as aiohttp's
# yarl did for the sinks' URLs: a literal space or non-ASCII character in a template).
_TARGET_AS_IS = re.compile(r"[\x21-\x7e]*")


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
        self.idle_since_s = 0.0  # the loop's time when it was last put back in the pool
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
    """Requests with JSON bodies to the origin of ``url``, with ``headers`` on each, over a pool
    of connections: :meth:`post` to ``url`` itself (the model call), :meth:`request` any
    method to any target of the origin (the sinks')."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        what: str,
        stage: str,
        connect_timeout_s: float,
        public_only: bool = False,
    ) -> None:
        """``what`` names the peer in errors (never the URL's query or the headers, which may
        hold credentials). ``public_only``: connect only to public addresses (module doc)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{what}: not an http(s) URL")
        self.what, self.stage = what, stage
        self.connect_timeout_s = connect_timeout_s
        self.public_only = public_only
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default = self._port == (443 if self._tls else 80)
        host = self._host if ":" not in self._host else f"[{self._host}]"
        authority = host if default else f"{host}:{self._port}"
        named = {name.lower() for name in headers}
        lines = [f"Host: {authority}"]
        lines += [f"{k}: {v}" for k, v in _DEFAULT_HEADERS.items() if k.lower() not in named]
        for name, value in headers.items():
            if any(c in f"{name}{value}" for c in "\r\n\0"):
                raise ValueError(f"{what}: header {name} holds a line break")
            lines.append(f"{name}: {value}")
        # Every header but the request's own, encoded once; a body-less GET's (a lookup's)
        # without the default Content-Type, as aiohttp sent it.
        self._fixed = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        typed = "content-type" not in named
        bare = [line for line in lines if not (typed and line.startswith("Content-Type:"))]
        self._fixed_bodiless = ("\r\n".join(bare) + "\r\n").encode("latin-1")
        self._head = f"POST {target} HTTP/1.1\r\n".encode("latin-1") + self._fixed
        self._idle: list[_Connection] = []

    async def post(self, body: bytes, *, timeout_s: float) -> tuple[int, object]:
        """(status, parsed JSON or None) of a 2xx answer; raises RemoteError subclasses."""
        return await self._exchange(self._head, body, timeout_s, None)

    async def request(
        self,
        method: str,
        target: str,
        body: bytes,
        *,
        timeout_s: float,
        headers: Mapping[str, str],
        ok_statuses: frozenset[int] | None = None,
    ) -> tuple[int, object]:
        """``method`` ``target`` (a path and query of this origin) with ``body`` and this
        request's ``headers`` besides the constant ones: (status, parsed JSON or None) of an
        answer whose status is in ``ok_statuses`` (default: any 2xx); raises RemoteError
        subclasses (a header holding a line break: a permanent error, not sent)."""
        if _TARGET_AS_IS.fullmatch(target) is None:
            target = quote(target, safe="/?#[]@!$&'()*+,;=:%~")
        extra = ""
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\0" in value:
                raise PermanentRemoteError(
                    f"{self.what}: header {name} holds a line break", stage=self.stage
                )
            extra += f"{name}: {value}\r\n"
        # A GET without a body (a lookup's) says nothing of one: no Content-Length, no
        # Content-Type (RFC 9110 8.6), as aiohttp sent it.
        sized = bool(body) or method != "GET"
        fixed = self._fixed if sized else self._fixed_bodiless
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + fixed
        return await self._exchange(
            head + extra.encode("latin-1"), body, timeout_s, ok_statuses, sized=sized
        )

    async def _exchange(
        self,
        head: bytes,
        body: bytes,
        timeout_s: float,
        ok_statuses: frozenset[int] | None,
        *,
        sized: bool = True,
    ) -> tuple[int, object]:
        """Send ``head`` (request line and headers but the length and the trace's) and
        ``body`` (``sized``: with its Content-Length); read the answer and map it (the module
        doc)."""
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
            if sized:
                head += b"Content-Length: %d\r\n" % len(body)
            connection.send(b"%s%s\r\n%s" % (head, extra, body))
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
            connection.idle_since_s = loop.time()
            self._idle.append(connection)
        elif not connection.closed:
            connection.close()
        coding = next((v for k, v in headers if k.lower() == b"content-encoding"), b"").lower()
        if raw and coding in (b"gzip", b"deflate"):
            raw = zlib.decompress(raw, 31 if coding == b"gzip" else 15)
        if not (200 <= status < 300 if ok_statuses is None else status in ok_statuses):
            if self.public_only and 300 <= status < 400:
                raise redirect_refused(self.what, status, stage=self.stage)
            named = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
            raise status_error(self.what, status, raw, named, stage=self.stage)
        return json_answer(status, raw)

    async def _connection(self, waiter: asyncio.Future[Answer]) -> _Connection:
        """An idle connection, else a new one (connecting within ``connect_timeout_s`` and
        before the call's deadline, which sets ``waiter``'s TimeoutError)."""
        idle = self._idle
        if idle:
            expired_s = asyncio.get_running_loop().time() - IDLE_EXPIRY_S
            while idle:
                connection = idle.pop()  # the most recently used: the others are older
                if connection.idle_since_s < expired_s:  # so all of them are expired
                    for stale in (connection, *idle):
                        stale.close()
                    idle.clear()
                elif not connection.closed:
                    return connection
        connect = asyncio.ensure_future(self._open())
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

    async def _open(self) -> tuple[asyncio.Transport, _Connection]:
        """A new connection; with ``public_only``, to a checked public address, each tried in
        turn as aiohttp's connector tried them (module doc)."""
        candidates = [self._host]
        if self.public_only:
            addresses = await resolve(self._host, self._port)
            for found in addresses:
                if not is_public(found):
                    raise UnsafeDestination(
                        f"{self.what}: host {self._host!r} resolved to non-public address "
                        f"{found} when connecting (the DNS answer changed since the check "
                        "before the request)",
                        stage=self.stage,
                    )
            if addresses:  # else unresolvable: the connect fails on its own
                candidates = [str(address) for address in addresses]
        loop = asyncio.get_running_loop()
        for address in candidates[:-1]:
            try:
                return await self._connect(loop, address)
            except OSError:
                continue  # the next address, as for a name create_connection resolves
        return await self._connect(loop, candidates[-1])

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, address: str
    ) -> tuple[asyncio.Transport, _Connection]:
        return await loop.create_connection(
            _Connection,
            address,
            self._port,
            ssl=_tls() if self._tls else None,
            server_hostname=self._host if self._tls else None,
        )

    def close(self) -> None:
        """Close the idle connections (those in use close when their answer is read)."""
        for connection in self._idle:
            connection.close()
        self._idle.clear()


class WireClient:
    """Requests to any http(s) URL (a sink's, rendered per delivery), through one
    :class:`JsonPoster` per origin, the ``MAX_ORIGINS`` most recently opened at most."""

    def __init__(
        self,
        headers: Mapping[str, str],
        *,
        what: str,
        stage: str,
        connect_timeout_s: float,
        public_only: bool = False,
    ) -> None:
        self.headers = dict(headers)
        self.what, self.stage = what, stage
        self.connect_timeout_s = connect_timeout_s
        self.public_only = public_only
        self._origins: dict[str, JsonPoster] = {}

    async def request(
        self,
        method: str,
        url: str,
        body: bytes,
        *,
        timeout_s: float,
        headers: Mapping[str, str],
        ok_statuses: frozenset[int] | None = None,
    ) -> tuple[int, object]:
        """:meth:`JsonPoster.request` to ``url``'s origin; a URL that is not http(s) with a
        host is a permanent error."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        poster = self._origins.get(origin)
        if poster is None:
            constant = self.headers
            if parts.username is not None and "authorization" not in map(str.lower, constant):
                # Credentials in the URL: Basic auth, as aiohttp sent them.
                pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                basic = base64.b64encode(pair.encode()).decode()
                constant = {**constant, "Authorization": f"Basic {basic}"}
            try:
                poster = JsonPoster(
                    origin,
                    constant,
                    what=self.what,
                    stage=self.stage,
                    connect_timeout_s=self.connect_timeout_s,
                    public_only=self.public_only,
                )
            except ValueError as exc:
                raise PermanentRemoteError(str(exc), stage=self.stage) from None
            if len(self._origins) >= MAX_ORIGINS:
                oldest = next(iter(self._origins))
                self._origins.pop(oldest).close()
            self._origins[origin] = poster
        return await poster.request(
            method, target, body, timeout_s=timeout_s, headers=headers, ok_statuses=ok_statuses
        )

    def close(self) -> None:
        for poster in self._origins.values():
            poster.close()
        self._origins.clear()


async def send_checked(
    client: WireClient,
    session: aiohttp.ClientSession,
    guard: NetGuard,
    method: str,
    url: str,
    json_body: Any,
    *,
    timeout_s: float,
    headers: Mapping[str, str],
    ok_statuses: frozenset[int] | None = None,
) -> tuple[int, object]:
    """A sink's or a lookup's request: ``url`` checked by ``guard``, then sent through
    ``client`` (``json_body`` None: no body), (status, parsed JSON or None) of an answer in
    ``ok_statuses``. A 3xx answering a call with ``allow_private`` is sent again through
    ``session`` (:func:`agents.outbound.http.request_json`), which follows the redirect as
    aiohttp always did; a guarded call's is :func:`agents.outbound.http.redirect_refused`'s
    error. With spans on, the answer's status is an attribute of the current span, an
    error's too."""
    await guard.check(url, what=client.what)
    data = b"" if json_body is None else orjson.dumps(json_body)
    try:
        answer = await client.request(
            method, url, data, timeout_s=timeout_s, headers=headers, ok_statuses=ok_statuses
        )
    except RemoteError as exc:
        if exc.status is not None and tracing.enabled():
            tracing.set_attributes({"http.response.status_code": exc.status})
        if not (guard.allow_private and exc.status is not None and 300 <= exc.status < 400):
            raise
        return await request_json(
            session,
            method,
            url,
            stage=client.stage,
            what=client.what,
            timeout_s=timeout_s,
            headers={**client.headers, **headers},
            json_body=json_body,
            ok_statuses=ok_statuses,
            guard=guard,
        )
    if tracing.enabled():
        tracing.set_attributes({"http.response.status_code": answer[0]})
    return answer


def _expire(waiter: asyncio.Future[Answer]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _close_late(connect: asyncio.Future[tuple[asyncio.Transport, _Connection]]) -> None:
    """A connect given up on that completed anyway: its connection is closed."""
    if not connect.cancelled() and connect.exception() is None:
        connect.result()[1].close()
