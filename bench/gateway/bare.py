"""The reference servers of the gateway benchmark, each run in its own process.

- ``--mode bare``: an aiohttp handler that reads the body and answers 202 — the ceiling.
- ``--mode kafka``: the same plus aiokafka ``send_and_wait`` (acks=all) per request — the
  naive peer: what a team writes in an afternoon, without verification, envelope or limits.
- ``--mode http1``: the bare handler on the gateway's own HTTP layer (:mod:`streams.http.protocol`):
  the ceiling of the stack the gateway runs on, reported beside (a) for comparison.

Both use the same event loop as the hookstream gateway under test (uvloop when installed), so
the comparison is about the handler, not the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from aiohttp import web
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from schemas.errors import WebhookRejected
from streams.http.message import Limits, Request, Response
from streams.http.server import HttpServer

PRODUCER_KEY = web.AppKey("producer", AIOKafkaProducer)
TOPIC_KEY = web.AppKey("topic", str)


async def bare(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=202, body=b'{"status":"accepted"}', content_type="application/json")


async def naive_kafka(request: web.Request) -> web.Response:
    body = await request.read()
    producer = request.app[PRODUCER_KEY]
    metadata = await producer.send_and_wait(request.app[TOPIC_KEY], body)
    return web.Response(
        status=202,
        body=b'{"offset":%d}' % metadata.offset,
        content_type="application/json",
    )


class BareApplication:
    """(d): what ``bare`` does, as a :class:`streams.http.protocol.Application`."""

    def check_head(self, request: Request) -> Response | None:
        return None

    def handle(self, request: Request) -> Response:
        return Response(202, b'{"status":"accepted"}')

    def refuse(self, request: Request | None, error: WebhookRejected) -> Response:
        return Response(error.status, error.detail.encode(), "text/plain")


async def serve_http1(args: argparse.Namespace) -> None:
    server = HttpServer(BareApplication(), Limits(1024 * 1024, 10.0, 75.0))
    await server.listen("127.0.0.1", args.port)
    print(f"http1 listening on http://127.0.0.1:{server.port}", flush=True)
    await _until_signalled()
    await server.close(5.0)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def main(args: argparse.Namespace) -> None:
    if args.mode == "http1":
        await serve_http1(args)
        return
    app = web.Application()
    producer: AIOKafkaProducer | None = None
    if args.mode == "kafka":
        producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
        await producer.start()
        app[PRODUCER_KEY] = producer
        app[TOPIC_KEY] = args.topic
        app.router.add_post("/webhooks/{source}", naive_kafka)
    else:
        app.router.add_post("/webhooks/{source}", bare)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    print(f"{args.mode} listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await _until_signalled()
    await runner.cleanup()
    if producer is not None:
        await producer.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["bare", "kafka", "http1"], required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="bench.naive")
    parsed = parser.parse_args()
    try:
        import uvloop

        runner_factory = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        runner_factory = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner_factory(main(parsed))
