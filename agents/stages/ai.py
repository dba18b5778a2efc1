"""The AI stage: enriched → results, one model call per (flow, event) at most.

Its dedupe is the second of the worker's two (the first is enrich's, :mod:`agents.stages.enrich`,
whose docstring also says how replayed records get markers of their own): ai remembers each
(flow, event id) whose result is on Kafka (``done/<flow>/<source>/<id>``,
:func:`agents.state.recovery.done_key`). An event processed again after a crash — or enriched
twice because the crash came between enrich's output and its marker — is skipped without
calling the model. The marker is written only once the result is acknowledged (a marker without
its result would make a restarted worker skip an event that has none); should a crash land
between the two, :mod:`agents.state.recovery` finds the result on restart. It rebuilds replayed
markers too (a result carries its replay's header), so a crash between a replayed result and
its marker costs no second call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from agents import metrics
from agents.ai.clients import client_for
from agents.ai.task import AITask, ProviderRuntime, cache_entry
from agents.emit import emit
from agents.outbound.retry import RetriesExhausted
from agents.resources import Resources
from agents.stages.base import InvalidRecord, Stage, decode
from agents.state.recovery import done_key
from schemas.codec import dumps
from schemas.config import HookstreamConfig
from schemas.errors import HookstreamError, InvalidModelOutput
from schemas.events import EnrichedEvent
from schemas.headers import carried_headers, replay_id

log = logging.getLogger(__name__)
# Events admitted per call slot (see AIStage.max_in_flight).
ADMIT_PER_CALL = 4


class AIStage(Stage):
    name = "ai"

    def __init__(self, config: HookstreamConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        self._limits = {
            flow.name: asyncio.Semaphore(flow.ai.max_concurrency) for flow in config.flows
        }
        self._in_flight = {
            flow.name: metrics.AI_IN_FLIGHT.labels(flow.name) for flow in config.flows
        }
        self._session: aiohttp.ClientSession | None = None
        self._runtimes: dict[str, ProviderRuntime] = {}
        self._tasks: dict[str, AITask] = {}

    @property
    def max_in_flight(self) -> int:
        """Events the runner admits: ``ADMIT_PER_CALL`` times the flows' call bounds.

        An admitted event is not always in a call: its key may be busy (it waits for its
        predecessor), or its call is over and it waits for its writes' acks. With 2N the
        runner was full most of the time and calls dropped below N (random keys: ~62 of 64 on
        average, 0.89x the benchmark's target); 4N keeps N calls running. The flow's semaphore
        still bounds the calls, and memory stays bounded by this number, not by the backlog.
        """
        return max(1, ADMIT_PER_CALL * sum(flow.ai.max_concurrency for flow in self.config.flows))

    def _task(self, flow: str) -> AITask:
        """The flow's task; provider clients follow the current HTTP session, while budgets
        and breakers live as long as the process."""
        session = self.resources.session
        if session is not self._session:
            self._session = session
            for provider in self.config.providers:
                runtime = self._runtimes.get(provider.name)
                if runtime is None:
                    self._runtimes[provider.name] = ProviderRuntime.build(provider, session)
                else:
                    runtime.client = client_for(provider, session)
            self._tasks = {
                f.name: AITask(f, self._runtimes, self.config.worker) for f in self.config.flows
            }
        return self._tasks[flow]

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            enriched = decode(EnrichedEvent, message.value, stage=self.name)
            if enriched.flow not in self._limits:
                raise InvalidRecord(
                    f"no flow named {enriched.flow!r} is configured", stage=self.name
                )
        except HookstreamError as exc:
            await self._fail(message, exc, extra_headers=[])
            return
        dedupe, cache = self.resources.dedupe, self.resources.ai_cache
        event = enriched.event
        marker = done_key(enriched.flow, event.source, event.id, replay_id(message))
        if dedupe is not None and marker in dedupe:
            metrics.DUPLICATES_SKIPPED.labels(self.name).inc()
            log.info("skipping %s: its result is already on Kafka", marker)
            return
        flow_header = [("hookstream-flow", enriched.flow.encode())]
        task = self._task(enriched.flow)
        # Rendered once, outside the call slot: the slot bounds calls, not template work.
        requests = task.requests_for(enriched)
        result = task.cached(enriched, cache, requests)
        cache_key = None
        if result is None:
            in_flight = self._in_flight[enriched.flow]
            failure: HookstreamError | None = None
            async with self._limits[enriched.flow]:
                in_flight.inc()
                try:
                    outcome = await task.run(enriched, requests)
                except HookstreamError as exc:
                    failure = exc
                finally:
                    in_flight.dec()
            if failure is not None:
                # Dead-lettered after the slot is given back: the DLQ write waits for Kafka,
                # not for the model, and must not keep another event's call waiting.
                extra = _errors(failure) if isinstance(failure, RetriesExhausted) else []
                await self._fail(message, failure, extra_headers=flow_header + extra)
                return
            result, cache_key = outcome.result, outcome.cache_key
        writer = self.resources.writer
        # The result first, and only once Kafka has it the "done" mark: written together, a
        # crash could leave the mark without the result, and the restarted worker would then
        # skip an event that has no result (found by the SIGKILL test).
        await emit(
            writer,
            self.topics.results,
            dumps(result),
            key=enriched.event.partitionkey.encode(),
            headers=carried_headers(message),
        )
        marks = []
        if dedupe is not None:
            marks.append(dedupe.put(writer, marker, 1))
        if cache is not None and cache_key is not None:
            marks.append(cache.put(writer, cache_key, cache_entry(result)))
        await asyncio.gather(*marks)


def _errors(exc: RetriesExhausted) -> list[tuple[str, bytes]]:
    """The validation errors of an answer that stayed invalid, as their own DLQ header."""
    if isinstance(exc.last, InvalidModelOutput):
        return [("hookstream-dlq-validation_errors", str(exc.last).encode()[:4000])]
    return []
