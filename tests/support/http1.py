"""A stand-in application and a raw-socket client for the HTTP/1.1 layer's tests.

The application echoes what it received, refuses heads by path, can hold an answer on a future
the test resolves, and misbehaves on request (``/boom``, ``/wrong``, ``/bad-header``) to show
that a bug is answered. The client side is raw bytes on a socket, so framing, ordering and
closing are seen exactly as a sender sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import orjson

from schemas.errors import WebhookRejected
from streams.http.message import Limits, Request, Response
from streams.http.server import HttpServer

LIMIT = 4096
BIG_ANSWER_BYTES = 256 * 1024


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
class Served:
    app: EchoApp
    server: HttpServer

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.server.port)


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[Served]:
    app = EchoApp()
    server = HttpServer(app, Limits(max_body_bytes=LIMIT, body_timeout_s=0.5, idle_timeout_s=0.5))
    await server.listen("127.0.0.1", 0)
    try:
        yield Served(app, server)
    finally:
        for future in app.held:
            if not future.done():
                future.set_result(Response(200, b"{}"))
        await server.close(2.0)


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
