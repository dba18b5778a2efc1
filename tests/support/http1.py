"""A stand-in application and a raw-socket client for the HTTP/1.1 layer's tests.

The application echoes what it received, refuses heads by path, can hold an answer on a future
the test resolves, and misbehaves on request (``/boom``, ``/wrong``, ``/bad-header``) to show
that a bug is answered. The client side is raw bytes on a socket, so framing, ordering and
closing are seen exactly as a sender sees them.

Time is a :class:`~tests.support.clock.ManualClock`: no timeout of the layer fires unless the
test advances the clock past it, so a test shows "not yet" and "now" at exact instants and never
sleeps. Where a test needs to know that the server has done something the wire does not show
(read the bytes sent, seen the client's EOF), it waits for that with :func:`until` on a
:class:`Client`'s counters, instead of sleeping "long enough".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

import orjson

from schemas.errors import WebhookRejected
from streams.http.message import Limits, Request, Response
from streams.http.protocol import Connection
from streams.http.server import HttpServer
from tests.support.clock import ManualClock

LIMIT = 4096
BIG_ANSWER_BYTES = 256 * 1024
BODY_TIMEOUT_S = 0.5
IDLE_TIMEOUT_S = 0.5
SWEEP_S = 0.25  # the server checks its timeouts every min(body, idle timeout) / 2


async def until(condition: Callable[[], object], what: str, *, timeout_s: float = 5.0) -> None:
    """Yield to the event loop until ``condition()`` holds: the sentinel a test waits on
    instead of a sleep. ``timeout_s`` (real time) only keeps a broken build from hanging."""
    loop = asyncio.get_running_loop()
    deadline_s = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline_s:
            raise AssertionError(f"still waiting, after {timeout_s:g} s, for {what}")
        await asyncio.sleep(0)


@dataclass
class EchoApp:
    """Answers each request with what it saw; ``/hold`` waits for the test to release it."""

    held: list[asyncio.Future[Response]] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def check_head(self, request: Request) -> Response | None:
        self.heads.append(request.path)
        if request.path == "/refuse":
            return Response(403, b'{"refused":true}')
        return None

    def handle(self, request: Request) -> Response | asyncio.Future[Response]:
        self.bodies.append(request.body)
        if request.path == "/hold":
            future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            self.held.append(future)
            return future
        if request.path == "/boom":
            raise RuntimeError("a bug in the application")
        if request.path == "/wrong":
            return cast(Response, {"not": "a Response"})  # a bug's answer
        if request.path == "/bad-header":
            return Response(200, b"{}", headers={"X-Name": "\u2014 not ISO-8859-1"})
        if request.path == "/big":
            return Response(200, b"x" * BIG_ANSWER_BYTES)
        echo = {
            "method": request.method,
            "path": request.path,
            "body": request.body.decode("latin-1"),
            "peer": request.peer,
            "signature": request.headers.get("X-Signature"),
        }
        return Response(200, orjson.dumps(echo))

    def refuse(self, request: Request | None, error: WebhookRejected) -> Response:
        return Response(error.status, orjson.dumps({"code": error.code, "detail": error.detail}))


@dataclass
class Client:
    """A client's two socket ends and the server's side of the same connection, whose reads
    are counted so that a test can wait until the server has read what it sent."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    connection: Connection  # the server's side
    sent_bytes: int = 0
    read_bytes: int = 0  # by the server
    eof_seen: bool = False  # by the server

    def __post_init__(self) -> None:
        connection = self.connection
        data_received, eof_received = connection.data_received, connection.eof_received

        def counting_data_received(data: bytes) -> None:
            self.read_bytes += len(data)
            data_received(data)

        def noting_eof_received() -> bool:
            self.eof_seen = True
            return eof_received()

        # The transport calls its protocol's methods through the instance: these see each
        # read (and the EOF) as it reaches the connection.
        connection.data_received = counting_data_received  # type: ignore[method-assign]
        connection.eof_received = noting_eof_received  # type: ignore[method-assign]

    def send(self, data: bytes) -> None:
        self.writer.write(data)
        self.sent_bytes += len(data)

    async def delivered(self) -> None:
        """Wait until the server has read everything sent so far."""
        await until(
            lambda: self.read_bytes >= self.sent_bytes,
            f"the server to read the {self.sent_bytes} bytes sent ({self.read_bytes} read)",
        )

    def closing(self) -> bool:
        """The server has closed, or begun closing, its side (a close is not undone)."""
        transport = self.connection._transport
        return transport is None or transport.is_closing()


@dataclass
class Served:
    app: EchoApp
    server: HttpServer
    clock: ManualClock

    async def open(self) -> Client:
        """A new connection, returned once the server has accepted it."""
        known = set(self.server.connections)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        await until(lambda: self.server.connections - known, "the server to accept")
        (connection,) = self.server.connections - known
        return Client(reader, writer, connection)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        client = await self.open()
        return client.reader, client.writer


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[Served]:
    app = EchoApp()
    clock = ManualClock()
    limits = Limits(
        max_body_bytes=LIMIT, body_timeout_s=BODY_TIMEOUT_S, idle_timeout_s=IDLE_TIMEOUT_S
    )
    server = HttpServer(app, limits, clock=clock)
    assert server._sweep_every_s == SWEEP_S  # the tests' steps are whole sweeps
    await server.listen("127.0.0.1", 0)
    try:
        yield Served(app, server, clock)
    finally:
        for future in app.held:
            if not future.done():
                future.set_result(Response(200, b"{}"))
        closing = asyncio.ensure_future(server.close(2.0))
        await asyncio.sleep(0)  # close() runs up to its wait for the connections still open
        clock.advance(2.0)  # the time it gives them
        await asyncio.wait_for(closing, timeout=5)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_answer(reader: asyncio.StreamReader, *, head_only: bool = False) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    body = b"" if head_only else await asyncio.wait_for(reader.readexactly(length), timeout=5)
    return Answer(status, headers, body)


async def closed(reader: asyncio.StreamReader) -> bool:
    """True when the server ends the connection (EOF or reset) within 5 s."""
    try:
        return await asyncio.wait_for(reader.read(1), timeout=5) == b""
    except ConnectionResetError:
        return True


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: t", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body
