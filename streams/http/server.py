"""The listening side of the gateway's HTTP/1.1 server: connections, clock, timeouts, close.

One :class:`~streams.http.protocol.Connection` per client does the protocol; this keeps what they
share: the application and limits, the Date line (formatted a few times a second rather than
per answer), the sweep that enforces every connection's timeouts, and a graceful close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from email.utils import formatdate
from typing import Any

from streams.http.message import Application, Limits
from streams.http.protocol import Connection

log = logging.getLogger(__name__)


class HttpServer:
    """The listening side: its connections, the shared clock and Date line, the timeouts."""

    def __init__(self, app: Application, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.connections: set[Connection] = set()
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
        self._server = await loop.create_server(lambda: Connection(self), host, port, **kwargs)
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

    def forget(self, connection: Connection) -> None:
        """A connection closed; the last one to close while closing ends :meth:`close`."""
        self.connections.discard(connection)
        if self.closing and not self.connections:
            self._all_closed.set()

    def _tick(self) -> None:
        """Refresh the Date line and enforce the timeouts; runs a few times a second."""
        loop = asyncio.get_running_loop()
        self.date_line = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        now_s = loop.time()
        for connection in list(self.connections):
            try:
                connection.check_timeouts(now_s)
            except Exception:  # a bug: one connection's must not stop every timeout
                log.exception("the HTTP layer failed checking a connection's timeouts")
                connection.abort()
        self._sweeper = loop.call_later(self._sweep_every_s, self._tick)
