"""Wire the stage handlers to Faust agents.

Every agent reads raw bytes (the stage decodes and dead-letters bad records itself) through
:class:`agents.stages.runner.OrderedRunner` over a ``noack`` stream, so Faust commits only what the
runner acked, in offset order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from agents.faust_app import on_release, release_when_waiting
from agents.metrics import watch_runner
from agents.resources import Resources
from agents.stages.ai import AIStage
from agents.stages.enrich import EnrichStage
from agents.stages.runner import Groups, OrderedRunner
from schemas.config import HookstreamConfig
from schemas.topics import Topics

log = logging.getLogger(__name__)


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def _attach(
    app: faust.App,
    name: str,
    topic: Any,
    resources: Resources,
    handle: Callable[[Any], Awaitable[None]],
    max_in_flight: int,
    groups: Groups[Any] | None = None,
    busy: Callable[[asyncio.Task[Any]], bool] | None = None,
) -> None:
    """``busy``: which of the agent's event tasks must finish before a rebalance or a stop;
    the others are released unacked then (:meth:`OrderedRunner.release`). None: all must."""

    async def agent(stream: Any) -> None:
        async with resources:
            runner = OrderedRunner(handle, max_in_flight=max_in_flight, groups=groups)
            if busy is not None:
                on_release(app, lambda: runner.release(busy), runner.resume)
            watch_runner(name, runner.stats, max_in_flight)
            log.info("agent %s running with max %d in flight", name, max_in_flight)
            await runner.run(stream.noack().events())

    app.agent(topic, name=name)(agent)


def register_worker(app: faust.App, config: HookstreamConfig, resources: Resources) -> None:
    """enrich: events → enriched; ai: enriched → results."""
    topics = Topics(config.kafka.topic_prefix)
    enrich = EnrichStage(config, resources)
    ai = AIStage(config, resources)
    _attach(
        app,
        "hookstream.enrich",
        _raw_topic(app, topics.events),
        resources,
        enrich.handle,
        max_in_flight=config.worker.enrich_concurrency,
    )
    _attach(
        app,
        "hookstream.ai",
        _raw_topic(app, topics.enriched),
        resources,
        ai.handle,
        max_in_flight=ai.max_in_flight,
        groups=ai.groups(),
        busy=ai.busy,
    )
    release_when_waiting(app, ai.gates.values())
