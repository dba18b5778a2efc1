"""The worker's stages: enrich (events → enriched) and ai (enriched → results).

Dedupe lives here, in two places, both backed by the worker's durable dedupe map
(:mod:`agents.state.durable_map`):

- enrich remembers each event id (``seen/<source>/<id>``) once its enriched records are on
  Kafka: a sender's retry of the same delivery, whichever gateway took it, carries the same id
  and the same partition key, so it reaches the same partition after the original and is
  dropped;
- ai remembers each (flow, event id) whose result is on Kafka (``done/<flow>/<source>/<id>``):
  an event processed again after a crash — or enriched twice because the crash came between
  enrich's output and its marker — is skipped without calling the model. The marker is
  written only once the result is acknowledged (a marker without its result would make a
  restarted worker skip an event that has none); should a crash land between the two,
  :mod:`agents.state.recovery` finds the result on restart.

A replayed record (``hookstream-replay: <replay id>``, :mod:`schemas.headers`) gets markers of
its own, ``…/replay/<replay id>``, rather than skipping dedupe. Its live markers are set — the
event was processed — so plain keys would drop every replayed event; skipping dedupe for
replays would instead lose dedupe *inside* a replay (a crash mid-replay, or a sender's duplicate
delivery inside the window, would produce a second replayed result). With the replay id in the
key each replay runs exactly once per event, a second replay is a new run, and the AI answer
cache (keyed by flow and prompt, not by marker) still answers an unchanged flow without a model
call. Redriven records (``hookstream-redriven``) keep the plain keys: a dead-lettered event was
never marked, so its redrive runs, and a redrive of something already done is skipped.
:mod:`agents.state.recovery` rebuilds both kinds from the results topic (a result carries its
replay's header), so a crash between a replayed result and its marker costs no second call.
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
from agents.outbound.retry import RetriesExhausted, RetryPolicy, with_retries
from agents.resources import Resources
from agents.stages.base import InvalidRecord, Stage, decode
from agents.stages.enricher import Enricher
from agents.state import recovery
from schemas.codec import dumps
from schemas.config import FlowConfig, HookstreamConfig
from schemas.errors import HookstreamError, InvalidModelOutput
from schemas.events import CloudEvent, EnrichedEvent
from schemas.headers import carried_headers, replay_id, replay_suffix

log = logging.getLogger(__name__)
# Events admitted per call slot (see AIStage.max_in_flight).
ADMIT_PER_CALL = 4


def seen_key(event: CloudEvent, replay: str | None = None) -> str:
    return f"seen/{event.event_key}{replay_suffix(replay)}"


def done_key(flow: str, event: CloudEvent, replay: str | None = None) -> str:
    return recovery.done_key(flow, event.source, event.id, replay)


class EnrichStage(Stage):
    name = "enrich"

    def __init__(self, config: HookstreamConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        self.policy = RetryPolicy(
            max_attempts=3,
            backoff_s=config.worker.retry_backoff_s,
            backoff_max_s=config.worker.retry_backoff_max_s,
        )
        self.enricher = Enricher(config, resources.session_for)

    async def handle(self, event: Any) -> None:
        message = event.message
        try:
            cloud_event = decode(CloudEvent, message.value, stage=self.name)
        except InvalidRecord as exc:
            await self._fail(message, exc, extra_headers=[])
            return
        flows = self.config.flows_for(cloud_event.source, cloud_event.type)
        if not flows:
            log.debug("no flow matches %s %s", cloud_event.source, cloud_event.type)
            return
        dedupe = self.resources.dedupe
        seen = seen_key(cloud_event, replay_id(message))
        if dedupe is not None and seen in dedupe:
            metrics.DUPLICATES_SKIPPED.labels(self.name).inc()
            log.info("skipping %s: this delivery was already processed", cloud_event.event_key)
            return
        enricher = self.enricher
        dead_lettered = False
        for flow in flows:

            async def attempt(_: int, flow: FlowConfig = flow) -> EnrichedEvent:
                return await enricher.enrich_for(flow, cloud_event)

            try:
                enriched, _ = await with_retries(
                    attempt, self.policy, what=f"flow {flow.name} enrichment"
                )
            except HookstreamError as exc:
                flow_header = [("hookstream-flow", flow.name.encode())]
                await self._fail(message, exc, extra_headers=flow_header)
                dead_lettered = True
                continue
            await emit(
                self.resources.writer,
                self.topics.enriched,
                dumps(enriched),
                key=cloud_event.partitionkey.encode(),
                headers=carried_headers(message),
            )
        # A dead-lettered event stays unmarked: its redrive, or the sender's retry, runs again.
        if dedupe is not None and not dead_lettered:
            await dedupe.put(self.resources.writer, seen, 1)


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
        marker = done_key(enriched.flow, enriched.event, replay_id(message))
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
