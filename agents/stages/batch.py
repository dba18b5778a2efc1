"""The AI stage's side of flows with ``ai.mode: batch``: queue the request, do not wait for it.

A provider's batch job answers within 24 h. The worker must not hold an event's offset that
long (a rebalance would stall on it, and the next owner would redo everything), so for an
event of a batch flow the AI stage only:

1. renders the request as for a call (a template the event cannot fill is dead-lettered here,
   at once) and asks the answer cache: a cached answer is written as the result at once,
   exactly as on the synchronous path;
2. writes the enriched record, byte for byte with its headers, to ``<prefix>.ai-batch``
   (keyed by the event's partition key, so per-key order carries over), acknowledged by every
   in-sync replica;
3. marks the event done in the dedupe memory, then the runner acks it like any other.

From there the request is durable on Kafka and ``hookstream batcher``
(:mod:`streams.ops.batcher`) owns it: it submits it in a job, and writes its result (or its
dead letter). The done mark after step 2 follows the synchronous rule (a mark only once what
it promises is on Kafka): an event delivered again is skipped rather than queued twice. A
worker killed between the two acks of steps 2 and 3 queues the event again when it is
delivered again: the batcher submits the copies of one event in one round once, and pays twice
for copies in two rounds (their results carry the same event id: the sinks' idempotency keys
deliver it once).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any, Protocol

from agents import metrics
from agents.ai.task import AITask
from agents.emit import emit
from agents.resources import Resources
from schemas.codec import dumps
from schemas.errors import HookstreamError, RecordTooLarge
from schemas.events import EnrichedEvent
from schemas.headers import carried_headers, flow_headers
from schemas.topics import Topics

log = logging.getLogger(__name__)


class _AIStage(Protocol):
    """What of :class:`agents.stages.ai.AIStage` this module uses (it may not import it:
    ai imports this module)."""

    resources: Resources
    topics: Topics

    def _task(self, flow: str, step: str | None) -> AITask: ...

    async def _fail(
        self, message: Any, error: BaseException, *, extra_headers: list[tuple[str, bytes]]
    ) -> BaseException: ...

    async def _write(
        self,
        message: Any,
        flow: str,
        key: bytes,
        marker: str,
        payload: bytes,
        cache_key: str | None,
        entry: dict[str, Any] | None,
    ) -> None: ...

    def _writes(self) -> AbstractContextManager[None]: ...


async def queue_for_batch(
    stage: _AIStage, message: Any, enriched: EnrichedEvent, marker: str
) -> None:
    """Steps 1-3 of the module docstring for one event of a batch flow."""
    name = enriched.flow
    task = stage._task(name, None)
    try:
        requests = task.requests_for(enriched)
    except HookstreamError as exc:  # a template the event cannot fill: for good
        await stage._fail(message, exc, extra_headers=flow_headers(name))
        return
    key = enriched.event.partitionkey.encode()
    result = task.cached(enriched, stage.resources.ai_cache, requests)
    if result is not None:
        await stage._write(message, name, key, marker, dumps(result), None, None)
        return
    with stage._writes():
        writer = stage.resources.writer
        try:
            await emit(
                writer,
                stage.topics.ai_batch,
                message.value,
                key=key,
                headers=carried_headers(message),
            )
        except RecordTooLarge as exc:  # the batch topic takes less than the enriched one
            await stage._fail(message, exc, extra_headers=flow_headers(name))
            return
        dedupe = stage.resources.dedupe
        if dedupe is not None:
            await dedupe.put(writer, marker, 1)
    metrics.AI_BATCH_QUEUED.labels(name).inc()
    log.debug("queued %s for the batcher", marker)
