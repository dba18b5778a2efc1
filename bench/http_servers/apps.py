"""The same trivial webhook handler on four HTTP/1.1 servers, for bench/http_servers/run.py.

The handler reads the whole POST body and answers 202 with ``{"status":"accepted"}`` as
``application/json``, nothing else: what is measured is the server, not the handler.

- ``hookstream``: :class:`streams.http.server.HttpServer` with the gateway's default limits
  (1 MiB body, 10 s body timeout, 75 s idle timeout), under uvloop;
- ``aiohttp``: an ``aiohttp.web.Application`` with one POST route (as (a) of bench/gateway),
  under uvloop, server settings at their defaults;
- ``uvicorn``: :data:`asgi_app` on uvicorn with ``http="httptools"``, ``loop="uvloop"``,
  no access log, no lifespan, other settings at their defaults;
- granian: :data:`asgi_app` or :data:`rsgi_app`, started by run.py as
  ``python -m granian --interface asgi|rsgi --loop uvloop --http 1 --workers 1 apps:...``.

Run as ``python apps.py hookstream|aiohttp|uvicorn --port N``; each prints
``listening on http://...`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# After PYTHONPATH: servers.start may point it at a committed revision of hookstream.
sys.path.append(str(Path(__file__).resolve().parents[2]))

BODY = b'{"status":"accepted"}'
ASGI_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The handler as an ASGI app (uvicorn, granian): read the body, answer 202.

    What the body holds is left as it came: an ASGI server hands the app the bytes on the
    wire, and decoding a ``Content-Encoding`` (and holding it to a limit) is the app's job.
    """
    if scope["type"] != "http":  # lifespan: granian's asgi interface sends it
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        if message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": ASGI_HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def rsgi_app(scope: Any, protocol: Any) -> None:
    """The handler on granian's own interface (RSGI): read the body, answer 202."""
    await protocol()
    protocol.response_bytes(202, [("content-type", "application/json")], BODY)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_hookstream(port: int) -> None:
    from schemas.errors import WebhookRejected
    from streams.http.message import Limits, Request, Response
    from streams.http.server import HttpServer

    class Bare:
        """The handler as a :class:`streams.http.message.Application`; the server has read
        (and decoded) the whole body before ``handle``."""

        def check_head(self, request: Request) -> Response | None:
            return None

        def handle(self, request: Request) -> Response:
            return Response(202, BODY)

        def refuse(self, request: Request | None, error: WebhookRejected) -> Response:
            return Response(error.status, error.detail.encode(), "text/plain")

    server = HttpServer(Bare(), Limits(1024 * 1024, 10.0, 75.0))  # the gateway's defaults
    await server.listen("127.0.0.1", port)
    print(f"hookstream listening on http://127.0.0.1:{server.port}", flush=True)
    await _until_signalled()
    await server.close(5.0)


async def serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def bare(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202, body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/webhooks/{source}", bare)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"aiohttp listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await _until_signalled()
    await runner.cleanup()


def serve_uvicorn(port: int) -> None:
    import uvicorn

    config = uvicorn.Config(
        asgi_app,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    print(f"uvicorn listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("server", choices=["hookstream", "aiohttp", "uvicorn"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.server == "uvicorn":
        serve_uvicorn(args.port)
        return
    import uvloop

    serve = serve_hookstream if args.server == "hookstream" else serve_aiohttp
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
