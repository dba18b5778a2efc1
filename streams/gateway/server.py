"""Run the gateway: topics ensured, producer up, listen (TLS when configured), drain on SIGTERM.

Graceful shutdown, in this order: ``/readyz`` turns 503 (load balancers stop sending), the
listening socket closes (no new connections), requests already in progress finish their Kafka
writes and get their answer (up to ``gateway.shutdown_timeout_s``), then the producer flushes
and closes. A 202 is therefore never lost to a rolling restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
import time
from collections.abc import AsyncIterator

from schemas.config import GatewaySettings, HookstreamConfig
from streams.gateway.routes import Gateway
from streams.http.message import Limits
from streams.http.server import HttpServer
from streams.kafka.admin import ensure_topics
from streams.kafka.batch_writer import BatchingKafkaWriter

log = logging.getLogger(__name__)


class KafkaLogThrottle(logging.Filter):
    """Let each aiokafka message (by its template) through at most once per ``interval_s``.

    While a broker is down, aiokafka logs "Unable to update metadata" and "Unable connect to
    node" thousands of times a second; one line per interval says the same.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last_s: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last_s.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        if len(self._last_s) > 1000:  # templates are few; this only bounds a surprise
            self._last_s.clear()
        self._last_s[key] = now
        return True


def tls_context(settings: GatewaySettings) -> ssl.SSLContext | None:
    """A server TLS context from the configured PEM files, or None for plain HTTP."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


@contextlib.asynccontextmanager
async def running_gateway(
    config: HookstreamConfig, *, port: int | None = None
) -> AsyncIterator[tuple[HttpServer, str]]:
    """The gateway serving, as (server, base URL); on exit, drain and close as described above."""
    await ensure_topics(config.kafka)
    settings = config.gateway
    async with BatchingKafkaWriter(config.kafka, client_id="hookstream-gateway") as writer:
        gateway = Gateway(config, writer)
        server = HttpServer(
            gateway,
            Limits(
                max_body_bytes=settings.max_body_bytes,
                body_timeout_s=settings.body_timeout_s,
                idle_timeout_s=settings.idle_timeout_s,
            ),
        )
        context = tls_context(settings)
        await server.listen(
            settings.host,
            settings.port if port is None else port,
            ssl=context,
            reuse_port=settings.reuse_port,
            backlog=1024,
        )
        scheme = "https" if context else "http"
        try:
            yield server, f"{scheme}://{settings.host}:{server.port}"
        finally:
            state = gateway.state
            state.draining = True
            log.info("draining: %d writes in flight", state.gate.in_flight)
            await server.close(settings.shutdown_timeout_s)
            log.info("drained; closing the Kafka producer")


async def serve(config: HookstreamConfig, *, port: int | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT (or cancellation), then shut down gracefully."""
    throttle = KafkaLogThrottle()
    for handler in logging.getLogger().handlers:
        handler.addFilter(throttle)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running_gateway(config, port=port) as (_, url):
            # Everything allocated so far (modules, config, app) lives as long as the process:
            # take it out of the collector's view so a request's garbage is cheap to collect.
            gc.freeze()
            print(f"gateway listening on {url}", flush=True)
            await stop.wait()
            log.info("stop signal received: shutting down gracefully")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
