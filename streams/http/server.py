"""The listening side of the gateway's HTTP/1.1 server: connections, clock, timeouts, close.

One :class:`~streams.http.protocol.Connection` per client does the protocol; this keeps what they
share: the application and limits, the clock (:mod:`schemas.clock`: the event loop unless
a test passes its own), the Date line (formatted a few times a second rather than per answer),
the sweep that enforces every connection's timeouts, and a graceful close.
"""

from __future__ import annotations

import asyncio
import logging
from email.utils import formatdate
from typing import Any

from schemas.clock import Clock, Timer
from streams.http.message import Application, Limits
from streams.http.protocol import Connection

log = logging.getLogger(__name__)


class HttpServer:
    """The listening side: its connections, the shared clock and Date line, the timeouts."""

    def __init__(self, app: Application, limits: Limits, *, clock: Clock | None = None) -> None:
        """``clock``: what the timeouts are measured on; by default the running event loop
        (taken in :meth:`listen`). Tests pass one they advance by hand."""
        self.app = app
        self.limits = limits
        self.connections: set[Connection] = set()
        self.requests_count = 0  # answered requests, for tests and operators
        self.closing = False
        self._all_closed = asyncio.Event()  # closing: the last connection closed, or time is up
        self.date_line = b""
        self._server: asyncio.Server | None = None
        self._clock = clock
        self._sweeper: Timer | None = None
        self._sweep_every_s = max(0.05, min(1.0, limits.body_timeout_s, limits.idle_timeout_s) / 2)

    async def listen(self, host: str, port: int, **kwargs: Any) -> asyncio.Server:
        """Start listening; ``kwargs`` go to ``loop.create_server`` (ssl, reuse_port, ...)."""
        loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = loop
        self._tick()
        self._server = await loop.create_server(lambda: Connection(self), host, port, **kwargs)
        return self._server

    @property
    def clock(self) -> Clock:
        """What the timeouts are measured on (read by each connection as it is made)."""
        if self._clock is None:
            raise RuntimeError("the server is not listening")
        return self._clock

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
            # On the server's clock, like every other timeout of the layer.
            giving_up = self.clock.call_later(timeout_s, self._all_closed.set)
            try:
                await self._all_closed.wait()
            finally:
                giving_up.cancel()
        for connection in list(self.connections):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            await self._server.wait_closed()

    def forget(self, connection: Connection) -> None:
        """A connection closed; the last one to close while closing ends :meth:`close`."""
        self.connections.discard(connection)
        if self.closing and not self.connections:
            self._all_closed.set()

    def _tick(self) -> None:
        """Refresh the Date line and enforce the timeouts; runs a few times a second."""
        clock = self.clock
        self.date_line = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        now_s = clock.time()
        for connection in list(self.connections):
            try:
                connection.check_timeouts(now_s)
            except Exception:  # a bug: one connection's must not stop every timeout
                log.exception("the HTTP layer failed checking a connection's timeouts")
                connection.abort()
        self._sweeper = clock.call_later(self._sweep_every_s, self._tick)
