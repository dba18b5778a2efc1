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

A multi-step flow (``steps:``) asks its steps in order inside the event's handling, so per-key
order and the runner's commit rule hold as for one call; each earlier step's answer is journaled
(:func:`agents.state.answers.step_key`) the moment it is paid, so a worker killed between two
steps asks only the steps not yet answered after its restart. A flow with no AI step renders its
``output`` mapping here and writes it as its result: no call, and the same results topic, done
marker and sinks as any other flow.

A provider outage pauses the flow rather than dead-lettering its events
(:mod:`agents.ai.task`, :mod:`agents.outbound.gate`): they wait, holding their runner slots and
offsets. One runner reads the enriched topic for every flow, so each flow may hold at most
``ADMIT_PER_CALL`` times its ``max_concurrency`` of the runner's slots (:meth:`AIStage.groups`):
a paused flow cannot take the slots of the others, which go on until the next record read is
one more of the paused flow's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Hashable, Iterator
from typing import Any

import aiohttp
import orjson

from agents import metrics
from agents.ai.clients import client_for
from agents.ai.responses import RESPONSE_IDS, ResponseIds
from agents.ai.task import AITask, ProviderRuntime, TaskFlow, cache_entry, flow_gate
from agents.emit import emit
from agents.outbound.gate import OutageGate
from agents.outbound.retry import RetriesExhausted
from agents.resources import Resources
from agents.stages.base import InvalidRecord, Stage, decode, traced
from agents.stages.batch import queue_for_batch
from agents.stages.runner import Groups
from agents.state.answers import step_key
from agents.state.durable_map import DurableMap, put_all
from agents.state.recovery import dead_key, done_key
from schemas import templates
from schemas.codec import dumps
from schemas.config import HookstreamConfig
from schemas.config_flows import FlowConfig
from schemas.errors import HookstreamError, InvalidModelOutput, RecordTooLarge
from schemas.events import AIResult, EnrichedEvent, TokenUsage
from schemas.headers import carried_headers, flow_headers, replay_id

log = logging.getLogger(__name__)
# Events admitted per call slot (see AIStage.max_in_flight).
ADMIT_PER_CALL = 4
# The dead/… mark of the (flow, event) the current task handles (AIStage._fail writes it).
_DEAD: contextvars.ContextVar[str | None] = contextvars.ContextVar("dead_mark", default=None)


class AIStage(Stage):
    name = "ai"

    def __init__(self, config: HookstreamConfig, resources: Resources) -> None:
        super().__init__(config, resources)
        self._flows = {flow.name: flow for flow in config.flows}
        # One call bound per AI task: (flow, None) for ai, (flow, step) for each step.
        self._limits = {
            (flow.name, step): asyncio.Semaphore(task.max_concurrency)
            for flow in config.flows
            for step, task in flow.tasks
        }
        self._in_flight = {
            flow.name: metrics.AI_IN_FLIGHT.labels(flow.name) for flow in config.flows
        }
        self._session: aiohttp.ClientSession | None = None
        self._runtimes: dict[str, ProviderRuntime] = {}
        self._tasks: dict[tuple[str, str | None], AITask] = {}
        # One outage gate per AI task, kept across the tasks' rebuilds like budgets and
        # breakers; a step's is labelled <flow>.<step> in the metrics, like its other ones.
        self.gates: dict[tuple[str, str | None], OutageGate] = {
            (flow.name, step): flow_gate(TaskFlow.of(flow, step), config.worker)
            for flow in config.flows
            for step, _ in flow.tasks
        }
        # The asyncio tasks a rebalance must let finish (see busy()).
        self._calling: set[asyncio.Task[Any]] = set()
        self._writing: set[asyncio.Task[Any]] = set()

    def busy(self, task: asyncio.Task[Any]) -> bool:
        """Is this event's task in a model call, or writing its result or dead letter? (A
        background response's polls are not a call: :mod:`agents.ai.responses`.)

        The runner's ``release`` (at a rebalance or a stop) cancels every other admitted
        event: those only wait (for a call slot, or for a paused flow's provider) and have
        neither paid for nor written anything.
        """
        return task in self._calling or task in self._writing

    @property
    def max_in_flight(self) -> int:
        """Events the runner admits: ``ADMIT_PER_CALL`` times the flows' call bounds.

        An admitted event is not always in a call: its key may be busy (it waits for its
        predecessor), or its call is over and it waits for its writes' acks. With 2N the
        runner was full most of the time and calls dropped below N (random keys: ~62 of 64 on
        average, 0.89x the benchmark's target); 4N keeps N calls running. The flow's semaphore
        still bounds the calls, and memory stays bounded by this number, not by the backlog.
        """
        return max(1, ADMIT_PER_CALL * sum(flow.max_concurrency for flow in self.config.flows))

    def groups(self) -> Groups[Any]:
        """Each flow's share of the runner: ``ADMIT_PER_CALL`` times its ``max_concurrency``
        (the shares add up to :attr:`max_in_flight`). A paused flow's events hold at most its
        share; a record that names no flow has only the overall bound (it is dead-lettered at
        once)."""
        flows = self.config.flows
        limits: dict[Hashable, int] = {f.name: ADMIT_PER_CALL * f.max_concurrency for f in flows}
        return Groups(group_of=_flow_of, limits=limits)

    def _task(self, flow: str, step: str | None) -> AITask:
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
                    close = getattr(runtime.client, "close", None)
                    if close is not None:  # its connections were the old session's peer's
                        close()
                    runtime.client = client_for(provider, session)
            self._tasks = {
                (flow, step): AITask(
                    self._flows[flow],
                    self._runtimes,
                    self.config.worker,
                    gate,
                    self._calling,
                    step=step,
                )
                for (flow, step), gate in self.gates.items()
            }
        return self._tasks[(flow, step)]

    @traced
    async def handle(self, event: Any) -> None:
        message = event.message
        _DEAD.set(None)
        try:
            enriched = decode(EnrichedEvent, message.value, stage=self.name)
            if enriched.flow not in self._flows:
                raise InvalidRecord(
                    f"no flow named {enriched.flow!r} is configured", stage=self.name
                )
        except HookstreamError as exc:
            await self._fail(message, exc, extra_headers=[])
            return
        dedupe = self.resources.dedupe
        event = enriched.event
        replay = replay_id(message)
        marker = done_key(enriched.flow, event.source, event.id, replay)
        _DEAD.set(dead_key(enriched.flow, event.source, event.id, replay))
        if dedupe is not None and marker in dedupe:
            metrics.DUPLICATES_SKIPPED.labels(self.name).inc()
            log.info("skipping %s: its result is already on Kafka", marker)
            self._done(enriched.flow, marker)
            return
        answers = self.resources.answers
        journaled = answers.take(marker) if answers is not None else None
        if journaled is not None:
            # Answered before a crash, its result not on Kafka then: written now, not paid again.
            metrics.AI_ANSWERS_REUSED.labels(enriched.flow).inc()
            log.info("answering %s from the answer journal (paid before the restart)", marker)
            entry = None
            if journaled.cache_key is not None:
                written = AIResult.model_validate_json(journaled.result)
                # A multi-step result's usage is every step's: no entry for its last step.
                entry = None if written.steps else cache_entry(written)
            key = event.partitionkey.encode()
            await self._write(
                message, enriched.flow, key, marker, journaled.result, journaled.cache_key, entry
            )
            self._done(enriched.flow, marker)
            return
        flow = self._flows[enriched.flow]
        if flow.ai is not None and flow.ai.mode == "batch":  # the batcher answers it
            await queue_for_batch(self, message, enriched, marker)
            return
        answered: dict[str, tuple[AIResult, str | None]] = {}
        last: tuple[AIResult, str | None] | None = None
        for step, _ in flow.tasks:
            last = await self._ask(message, enriched, marker, step, answered)
            if last is None:  # dead-lettered: its earlier steps' answers are no longer needed
                self._done(flow.name, marker)
                return
            if step is not None:
                answered[step] = last
        if last is None:  # no AI step: the output mapping is the result
            try:
                last = (transformed(flow, enriched), None)
            except HookstreamError as exc:  # a template the event cannot fill: for good
                await self._fail(message, exc, extra_headers=flow_headers(flow.name))
                return
        result, cache_key = last
        entry = cache_entry(result) if cache_key is not None else None
        if answered:
            result = combined(flow, enriched, {name: r for name, (r, _) in answered.items()})
        payload = dumps(result)
        if answers is not None and not result.cached:
            # Paid for: on local disk before anything else (agents.state.answers says why).
            answers.record(marker, payload, cache_key)
        key = event.partitionkey.encode()
        await self._write(message, flow.name, key, marker, payload, cache_key, entry)
        # The earlier steps' cache entries after the result: like the last step's, they only
        # save calls. Awaited here, in the event's own task, so busy() covers them.
        earlier = [(k, cache_entry(r)) for r, k in list(answered.values())[:-1] if k is not None]
        await self._cache_entries(earlier)
        self._done(flow.name, marker)

    async def _ask(
        self,
        message: Any,
        enriched: EnrichedEvent,
        marker: str,
        step: str | None,
        answered: dict[str, tuple[AIResult, str | None]],
    ) -> tuple[AIResult, str | None] | None:
        """One AI task's answer for the event and its answer-cache key (None: not to be
        cached), or None once the event is dead-lettered. ``step``: the step's name in a
        multi-step flow, whose earlier answers (``answered``) its prompt may read; such a
        step's answer is journaled under its own key, and taken from there after a restart."""
        name = enriched.flow
        answers = self.resources.answers
        journal_key = None if step is None else step_key(marker, step)
        if journal_key is not None and answers is not None:
            journaled = answers.take(journal_key)
            if journaled is not None:
                metrics.AI_ANSWERS_REUSED.labels(f"{name}.{step}").inc()
                log.info(
                    "answering %s from the answer journal (paid before the restart)", journal_key
                )
                return AIResult.model_validate_json(journaled.result), journaled.cache_key
        task = self._task(name, step)
        earlier = {s: result.output for s, (result, _) in answered.items()}
        # Rendered once, outside the call slot: the slot bounds calls, not template work.
        try:
            requests = task.requests_for(enriched, earlier)
        except HookstreamError as exc:  # a template the event cannot fill: for good
            await self._fail(message, exc, extra_headers=flow_headers(name))
            return None
        result = task.cached(enriched, self.resources.ai_cache, requests)
        if result is not None:
            return result, None
        dedupe = self.resources.dedupe
        if dedupe is not None:  # background responses' ids, kept under the event's marker
            RESPONSE_IDS.set(ResponseIds(marker, dedupe, self.resources.writer, self._calling))
        in_flight = self._in_flight[name]
        failure: HookstreamError | None = None
        async with self._limits[(name, step)]:
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
            await self._fail(message, failure, extra_headers=flow_headers(name) + extra)
            return None
        if journal_key is not None and answers is not None:
            # Paid for: on local disk before the next step (agents.state.answers says why).
            answers.record(journal_key, dumps(outcome.result), outcome.cache_key)
        return outcome.result, outcome.cache_key

    async def _cache_entries(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Answer-cache entries written on their own (an earlier step's, or those of a result
        too large to write): they only save calls, so one over its topic's limit is not kept."""
        cache = self.resources.ai_cache
        if cache is None or not entries:
            return
        with self._writes():
            writer = self.resources.writer
            try:
                await put_all(writer, [(cache, k, entry) for k, entry in entries])
            except RecordTooLarge:
                log.warning("an answer-cache entry is too large for %s: not kept", cache.topic)

    def _done(self, flow: str, marker: str) -> None:
        """The journal's note that the answers for ``marker`` are safe on Kafka (its result
        is): the result's (a second note after :meth:`_write`'s is a no-op) and its steps'."""
        answers = self.resources.answers
        if answers is None:
            return
        answers.done(marker)
        for step in self._flows[flow].steps:
            answers.done(step_key(marker, step.name))

    async def _write(
        self,
        message: Any,
        flow: str,
        key: bytes,
        marker: str,
        payload: bytes,
        cache_key: str | None,
        entry: dict[str, Any] | None,
    ) -> None:
        """The result, then its "done" marker and its answer-cache entry, then the journal's
        note that the answer is safe on Kafka.

        A result over what the results topic accepts (its ``max.message.bytes``) is
        dead-lettered with that error instead: written again it would fail alike, and the
        partition would wait behind it for good. Its answer-cache entry is still written (a
        redrive, once the topic takes larger records, is answered from it without paying)."""
        with self._writes():
            writer = self.resources.writer
            dedupe, cache = self.resources.dedupe, self.resources.ai_cache
            # The result first, and only once Kafka has it the "done" mark: written together, a
            # crash could leave the mark without the result, and the restarted worker would then
            # skip an event that has no result (found by the SIGKILL test).
            try:
                await emit(
                    writer, self.topics.results, payload, key=key, headers=carried_headers(message)
                )
            except RecordTooLarge as exc:
                await self._result_too_large(message, flow, marker, exc, cache_key, entry)
                return
            marks: list[tuple[DurableMap, str, Any]] = []
            if dedupe is not None:
                marks.append((dedupe, marker, 1))
            if cache is not None and cache_key is not None and entry is not None:
                marks.append((cache, cache_key, entry))
            if marks:
                try:
                    await put_all(writer, marks)
                except RecordTooLarge:  # the cache entry, over its topic's limit: not kept
                    log.warning("the answer-cache entry of %s is too large for its topic", marker)
                    await put_all(writer, [mark for mark in marks if mark[0] is dedupe])
            if self.resources.answers is not None:
                self.resources.answers.done(marker)

    async def _result_too_large(
        self,
        message: Any,
        flow: str,
        marker: str,
        error: RecordTooLarge,
        cache_key: str | None,
        entry: dict[str, Any] | None,
    ) -> None:
        """:meth:`_write`'s dead letter for a result the results topic refuses as too large."""
        if cache_key is not None and entry is not None:
            await self._cache_entries([(cache_key, entry)])
        failure = RecordTooLarge(f"the result of flow {flow} is not written: {error}")
        await self._fail(message, failure, extra_headers=flow_headers(flow))
        if self.resources.answers is not None:
            self.resources.answers.done(marker)

    async def _fail(
        self, message: Any, error: BaseException, *, extra_headers: list[tuple[str, bytes]]
    ) -> BaseException:
        """The dead letter, then (once Kafka has it) the ``dead/…`` mark of the (flow, event)
        being handled, if any: enrich drops the sender's retries by it, as by the ``seen``
        mark it wrote itself before issue 16. This stage never reads it, so a redrive of the
        dead letter runs."""
        with self._writes():
            failed = await super()._fail(message, error, extra_headers=extra_headers)
            dead, dedupe = _DEAD.get(), self.resources.dedupe
            if dead is not None and dedupe is not None:
                await dedupe.put(self.resources.writer, dead, 1)
            return failed

    @contextlib.contextmanager
    def _writes(self) -> Iterator[None]:
        """Mark the current task busy (:meth:`busy`) while it writes."""
        current = asyncio.current_task()
        if current is None or current in self._writing:  # an outer block marks it, and clears it
            yield
            return
        self._writing.add(current)
        try:
            yield
        finally:
            self._writing.discard(current)


def transformed(flow: FlowConfig, enriched: EnrichedEvent) -> AIResult:
    """A flow with no AI step: its ``output`` mapping rendered over the event (a string that
    is one placeholder keeps the value's JSON type), as the flow's result."""
    context: dict[str, Any] = {
        "event": enriched.event.model_dump(mode="json"),
        "data": enriched.event.data,
        "enrichment": enriched.enrichment,
    }
    return AIResult(
        flow=flow.name,
        event=enriched.event,
        enrichment=enriched.enrichment,
        provider="",
        model="",
        output=templates.render_json(flow.output or {}, context),
        latency_ms=0.0,
        attempts=0,
    )


def combined(flow: FlowConfig, enriched: EnrichedEvent, steps: dict[str, AIResult]) -> AIResult:
    """A multi-step flow's result: the last step's answer as output, every step's under
    ``steps``, usage, cost, calls and latency summed over the steps."""
    results = list(steps.values())
    last = results[-1]
    prompt_tokens = sum(r.usage.prompt_tokens for r in results)
    completion_tokens = sum(r.usage.completion_tokens for r in results)
    return AIResult(
        flow=flow.name,
        event=enriched.event,
        enrichment=enriched.enrichment,
        provider=last.provider,
        model=last.model,
        output=last.output,
        steps={name: r.output for name, r in steps.items()},
        usage=TokenUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        latency_ms=sum(r.latency_ms for r in results),
        attempts=sum(r.attempts for r in results),
        cached=all(r.cached for r in results),
        cost_usd=sum(r.cost_usd for r in results),
        fallback=any(r.fallback for r in results),
        reasked=any(r.reasked for r in results),
    )


def _flow_of(event: Any) -> str | None:
    """The flow an enriched record is for, read without validating the rest of it."""
    try:
        value = orjson.loads(event.message.value or b"")
    except orjson.JSONDecodeError:
        return None
    flow = value.get("flow") if isinstance(value, dict) else None
    return flow if isinstance(flow, str) else None


def _errors(exc: RetriesExhausted) -> list[tuple[str, bytes]]:
    """The validation errors of an answer that stayed invalid, as their own DLQ header."""
    if isinstance(exc.last, InvalidModelOutput):
        return [("hookstream-dlq-validation_errors", str(exc.last).encode()[:4000])]
    return []
