"""A local port whose connections never open, for connect-timeout tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


@contextlib.contextmanager
def port_that_never_accepts() -> Iterator[int]:
    """A listener with a backlog of 0, its accept queue filled by non-blocking connects: the
    kernel drops further SYNs, so a client's connect neither succeeds nor is refused; it hangs
    until its own timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = [socket.socket() for _ in range(8)]
    for filler in fillers:
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
    try:
        yield port
    finally:
        for sock in (*fillers, server):
            sock.close()
