"""The replay's pricer: each (flow, event) answered the way the AI stage would answer it.

:meth:`streams.ops.replay.Replayer.estimate` reads the window; this prices each task with the
AI stage's own code, so the estimate cannot drift from what the worker does: the request is
rendered by :meth:`agents.ai.task.AITask.requests_for`, the cache is asked through
:meth:`~agents.ai.task.AITask.cached` (each model of the flow's chain, by
:meth:`~agents.ai.provider.ChatRequest.cache_key`), tokens are estimated by
:meth:`~agents.ai.provider.ChatRequest.estimated_tokens` and dollars come from
:meth:`~agents.ai.task.ProviderRuntime.cost_usd` and the provider's ``prices``. It lives in
the CLI because only this layer may join ``agents`` and ``streams.ops``.

The answer cache is the worker's ``<prefix>.ai-cache`` topic, read whole, read-only (the topic
is not created when missing: nothing is cached then), into the same
:class:`~agents.state.durable_map.DurableMap` the worker uses, with the worker's TTL.

What is estimated, and said so in the printed line: an events-topic record has no enrichment
yet, so its earlier result's enrichment stands in (the lookups are assumed to answer the same);
without one, a prompt that needs the enrichment cannot be rendered and the task counts as a
call. A call's tokens are its earlier result's usage when there is one (the same prompt costs
about the same again), else prompt characters / 4 plus ``max_tokens`` (an upper bound for the
completion); it is priced at the primary model of the flow (fallbacks are not foreseen).

A replay prices up to 10,000 tasks before it copies anything (``streams.ops.replay.PRICED_MAX``),
so the per-task work is kept to what can change the answer (bench/replay, issue 16): the cache is
not asked while it holds no entry (no key to compute: it cannot answer), the request of the
chain's first model only is rendered when the cache is not asked, and a call is priced once per
shape, its tokens and the model that answered (:meth:`ReplayPricer._priced_call`): prompt
characters / 4 gives many prompts one count (bench/replay's 10,050 sampled calls: 2 shapes).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from agents.ai.breaker import CircuitBreaker
from agents.ai.budget import RateBudget
from agents.ai.provider import ChatClient, ChatRequest
from agents.ai.task import AITask, ProviderRuntime
from agents.state.durable_map import DurableMap
from schemas.config import HookstreamConfig
from schemas.config_flows import FlowConfig
from schemas.errors import HookstreamError, TemplateError
from schemas.events import CloudEvent, EnrichedEvent, TokenUsage
from schemas.topics import ENRICHED, Topics
from streams.kafka.compacted import CompactedReader
from streams.kafka.connection import client_kwargs
from streams.ops.replay import Original, Priced


class _NoClient:
    """The pricer renders requests and reads prices; it never calls a model."""

    provider: Any = None

    async def complete(self, request: Any) -> Any:
        raise RuntimeError("the replay's pricer does not call models")


def _runtime(config: HookstreamConfig, name: str) -> ProviderRuntime:
    provider = next(p for p in config.providers if p.name == name)
    client: ChatClient = _NoClient()
    return ProviderRuntime(
        provider, client, RateBudget(provider.budget), CircuitBreaker(name, provider.breaker)
    )


class ReplayPricer:
    """Implements :class:`streams.ops.replay.Pricer`; ``async with`` loads the answer cache."""

    def __init__(self, config: HookstreamConfig) -> None:
        self.config = config
        runtimes = {p.name: _runtime(config, p.name) for p in config.providers}
        self.tasks = {
            (f.name, step): AITask(f, runtimes, config.worker, step=step)
            for f in config.flows
            for step, _ in f.tasks
        }
        worker = config.worker
        self.cache = DurableMap(
            config.kafka,
            Topics(config.kafka.topic_prefix).ai_cache,
            ttl_s=worker.ai_cache.ttl_s,
            cleanup_interval_s=worker.ai_cache.cleanup_interval_s,
        )
        self.cache_entries = 0
        # (task, outcome, tokens, answered model, from usage) -> its Priced: see _priced_call.
        self._shapes: dict[tuple[str, str, int, int, str, bool], Priced] = {}
        self._validate_event = CloudEvent.__pydantic_validator__.validate_python

    async def __aenter__(self) -> ReplayPricer:
        await self.load()
        return self

    async def load(self) -> None:
        """Read the answer cache; the CLI runs it beside the estimate's read of the window
        (``Replayer.estimate(ready=...)``), which needs it only to price."""
        if any(flow.cache for flow in self.config.flows) and await self._cache_exists():
            reader = CompactedReader(
                self.config.kafka,
                self.cache.topic,
                # The map's own record reader: entries are kept exactly as the worker keeps
                # them (newest written_at per key, TTL on read).
                self.cache._apply,
                client_id="hookstream-replay-estimate",
                isolation_level="read_committed",
            )
            await reader.start(load=True)
            await reader.stop()
            self.cache_entries = len(self.cache)

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def _cache_exists(self) -> bool:
        consumer = AIOKafkaConsumer(**client_kwargs(self.config.kafka))
        try:
            await consumer.start()
            return self.cache.topic in await consumer.topics()
        finally:
            await consumer.stop()

    def _enriched(
        self, flow: FlowConfig, role: str, value: dict[str, Any], original: Original | None
    ) -> EnrichedEvent:
        if role == ENRICHED:
            return EnrichedEvent.model_validate(value)
        enrichment = original.enrichment if original is not None else {}
        # CloudEvent.model_validate's own validator, called without its wrapper (~0.6 µs).
        return EnrichedEvent(
            flow=flow.name, event=self._validate_event(value), enrichment=enrichment
        )

    def price(
        self, flow: FlowConfig, role: str, value: dict[str, Any], original: Original | None
    ) -> Priced:
        """How the AI stage would answer this (flow, event) now, and what its calls cost: a
        flow with no AI step makes none, a multi-step flow one per step not cached."""
        if not flow.tasks:
            return Priced("none")
        try:
            enriched = self._enriched(flow, role, value, original)
        except ValueError:  # pydantic's ValidationError: the enrich stage dead-letters it
            return Priced("invalid")
        if flow.ai is not None:
            return self._price_task(self.tasks[(flow.name, None)], enriched, role, original)
        parts: list[Priced] = []
        for index, (step, _) in enumerate(flow.tasks):
            task = self.tasks[(flow.name, step)]
            # A later step's prompt reads answers not known before the replay: sized from its
            # template, as a call (it cannot be looked up in the cache).
            part = self._price_task(task, enriched, role, original, reads_steps=index > 0)
            if part.outcome == "invalid" and index == 0:
                return part
            parts.append(part)
            if part.outcome == "invalid":  # dead-lettered at this step, the earlier ones paid
                break
        return Priced("steps", parts=tuple(parts))

    def _price_task(
        self,
        task: AITask,
        enriched: EnrichedEvent,
        role: str,
        original: Original | None,
        *,
        reads_steps: bool = False,
    ) -> Priced:
        """One AI task of the flow for this event (its ``ai``, or one step)."""
        ai = task.flow.ai
        unknown = False
        # An empty cache answers nothing: it is not asked, and only the request of the
        # chain's first model (the one priced) is rendered.
        asks_cache = bool(ai.cache) and len(self.cache) > 0
        try:
            if reads_steps and "steps" in task.system.roots | task.prompt.roots:
                raise TemplateError("the earlier steps' answers are not known")
            requests = task.requests_for(enriched) if asks_cache else [task.request_for(enriched)]
        except TemplateError:
            roots = task.system.roots | task.prompt.roots
            later = reads_steps and "steps" in roots
            if not later and (
                role == ENRICHED or original is not None or "enrichment" not in roots
            ):
                return Priced("invalid")  # the AI stage dead-letters an unrenderable prompt
            # The prompt needs the enrichment (or earlier steps' answers): the payload's JSON
            # stands in for it, to size the call; whether the cache holds it cannot be known.
            unknown = True
            requests = [
                ChatRequest(
                    model=task.chain[0].model,
                    system=ai.system,
                    prompt=orjson.dumps(enriched.event.data).decode(),
                    schema_name=task.flow.name,
                    schema=ai.output,
                    temperature=ai.temperature,
                    max_tokens=ai.max_tokens,
                )
            ]
        except HookstreamError:
            return Priced("invalid")
        if not unknown and asks_cache and task.cached(enriched, self.cache, requests) is not None:
            return Priced("cache")
        request = requests[0]
        # An earlier result's usage is the whole event's: it sizes a one-task flow's call.
        if (
            original is not None
            and original.prompt_tokens + original.completion_tokens
            and (task.flow.name == enriched.flow)
        ):
            prompt_tokens, completion_tokens = original.prompt_tokens, original.completion_tokens
            from_usage = True
        else:
            total = request.estimated_tokens()
            prompt_tokens, completion_tokens = total - request.max_tokens, request.max_tokens
            from_usage = False
        answered = original.model if original is not None else task.chain[0].model
        outcome = "unknown" if unknown else "call"
        shape = (task.flow.name, outcome, prompt_tokens, completion_tokens, answered, from_usage)
        priced = self._shapes.get(shape)
        if priced is None:
            priced = self._shapes[shape] = self._priced_call(task, shape)
        return priced

    @staticmethod
    def _priced_call(task: AITask, shape: tuple[str, str, int, int, str, bool]) -> Priced:
        """A call of ``task`` of this shape, priced by the provider's ``cost_usd``: the same
        for every call of the same shape (a Priced is immutable), so computed once per shape."""
        _, outcome, prompt_tokens, completion_tokens, answered, from_usage = shape
        target = task.chain[0]
        runtime = target.runtime
        usage = TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        prices = runtime.config.prices
        return Priced(
            "unknown" if outcome == "unknown" else "call",
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=runtime.cost_usd(target.model, answered, usage),
            batch_cost_usd=runtime.cost_usd(target.model, answered, usage, batch=True),
            from_usage=from_usage,
            has_price=target.model in prices or answered in prices,
        )
