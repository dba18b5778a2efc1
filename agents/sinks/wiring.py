"""The sink worker's agents: one per (flow, sink), all reading the results topic.

Each agent holds, for as long as it runs, the process's shared connections
(:class:`agents.resources.Resources`), the delivered-memory (shared by every sink agent of the
process) and its own sink's connections (a PostgreSQL pool), and runs its stage through
:class:`agents.stages.runner.OrderedRunner` over a ``noack`` stream: Faust commits only what
the runner acked, in offset order. A paused sink keeps its runner's slots full, so its agent
stops pulling.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from agents.faust_app import ReleasingApp, on_assigned, on_release, release_when_waiting
from agents.resources import Resources
from agents.sinks.stage import SinkStage
from agents.stages.runner import OrderedRunner
from agents.state.delivered import DeliveredMemory
from schemas.config import HookstreamConfig
from schemas.topics import Topics

log = logging.getLogger(__name__)


def register_sink_agents(
    app: faust.App, config: HookstreamConfig, resources: Resources
) -> list[SinkStage]:
    topics = Topics(config.kafka.topic_prefix)
    results = app.topic(
        topics.results,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    # Caught up once per assignment (agents.state.delivered), so the tail need not be prompt:
    # it fetches 64 KiB or every 100 ms, not once per batch of this worker's own entries.
    memory = DeliveredMemory(
        config.kafka,
        topics.delivered,
        per_assignment=isinstance(app, ReleasingApp),
        tail_fetch_min_bytes=64 * 1024,
        tail_fetch_max_wait_ms=100,
    )
    on_assigned(app, memory.assigned)
    stages: list[SinkStage] = []
    for flow in config.flows:
        for sink in flow.sinks:
            stage = SinkStage(config, resources, memory, flow.name, sink.name)
            stages.append(stage)
            _attach(app, f"hookstream.sink.{flow.name}.{sink.name}", results, stage, memory)
            release_when_waiting(app, [stage.gate])
    return stages


def _attach(
    app: faust.App, name: str, topic: Any, stage: SinkStage, memory: DeliveredMemory
) -> None:
    max_in_flight = stage.config.worker.sink_concurrency

    async def agent(stream: Any) -> None:
        async with stage.resources, memory, stage:
            runner = OrderedRunner(stage.handle, max_in_flight=max_in_flight)
            # A paused sink's waiting deliveries must not hold up a rebalance or a stop
            # (agents.faust_app): only those held at the closed gate are let go.
            on_release(app, lambda: runner.release(stage.busy), runner.resume)
            log.info("agent %s running with max %d in flight", name, max_in_flight)
            await runner.run(stream.noack().events())

    app.agent(topic, name=name)(agent)
