"""The sink worker process: its stages, its delivered-memory, its consumer and its probes.

One :class:`agents.sinks.stage.SinkStage` per (flow, sink), all reading the results topic in
the consumer group ``<prefix>-sinks`` (the group the Faust agents used: an upgrade keeps its
committed offsets) through one :class:`agents.sinks.consumer.SinkConsumer`. The process holds,
for as long as it runs, the shared connections (:class:`agents.resources.Resources`), the
delivered-memory (shared by every sink of the process) and each sink's own connections (a
PostgreSQL pool). ``/metrics``, ``/healthz`` and ``/readyz`` are served from its event loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

from aiohttp import web

from agents import metrics
from agents.resources import Resources
from agents.sinks.consumer import SinkConsumer
from agents.sinks.stage import SinkStage
from agents.state.delivered import DeliveredMemory
from schemas.config import HookstreamConfig
from schemas.topics import Topics
from streams.metrics.exposition import start_metrics_server

log = logging.getLogger(__name__)


def sink_consumer(config: HookstreamConfig, resources: Resources) -> SinkConsumer:
    """The stages of every configured sink, over one delivered-memory and one consumer."""
    topics = Topics(config.kafka.topic_prefix)
    # Caught up once per assignment (agents.state.delivered), so the tail need not be prompt:
    # it fetches 64 KiB or every 100 ms, not once per batch of this worker's own entries.
    memory = DeliveredMemory(
        config.kafka,
        topics.delivered,
        per_assignment=True,
        tail_fetch_min_bytes=64 * 1024,
        tail_fetch_max_wait_ms=100,
    )
    stages = [
        SinkStage(config, resources, memory, flow.name, sink.name)
        for flow in config.flows
        for sink in flow.sinks
    ]
    group_id = f"{config.kafka.topic_prefix}-sinks"
    return SinkConsumer(config, memory, stages, topic=topics.results, group_id=group_id)


async def run_sink_worker(
    config: HookstreamConfig, *, metrics_port: int | None = None, metrics_host: str = "127.0.0.1"
) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly (nothing lost, nothing sent twice)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    resources = Resources(config, client_id=f"{config.kafka.topic_prefix}-sinks")
    consumer = sink_consumer(config, resources)
    async with AsyncExitStack() as stack:
        if metrics_port is not None:
            runner = await _serve_metrics(consumer, metrics_host, metrics_port)
            stack.push_async_callback(runner.cleanup)
        await stack.enter_async_context(resources)
        await stack.enter_async_context(consumer.memory)
        for stage in consumer.stages:
            await stack.enter_async_context(stage)
        await consumer.run(stop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)


async def _serve_metrics(consumer: SinkConsumer, host: str, port: int) -> web.AppRunner:
    """``/metrics`` and the Kubernetes probes, for as long as the sink worker runs.

    ``/healthz`` (liveness): 503 once the worker is stopping, else 200; it does not ask Kafka,
    so a broker outage does not make Kubernetes restart every pod. ``/readyz`` (readiness):
    200 once the shared connections, the delivered-memory and every sink are started and the
    consumer has joined; it does not wait for a partition assignment (a replica beyond the
    partition count never gets one, and a rebalance would make every replica unready at once).
    """

    def alive() -> str | None:
        return "sink worker stopping" if consumer.stopping else None

    def ready() -> str | None:
        if consumer.stopping:
            return "sink worker stopping"
        if not consumer.ready:
            return "starting: the sinks and their memory are not running yet"
        return None

    # Consumer lag per partition, read at scrape time (agents.metrics.watch_lag).
    metrics.watch_lag(consumer.group_id, consumer.lag)
    return await start_metrics_server(host, port, alive=alive, ready=ready)
