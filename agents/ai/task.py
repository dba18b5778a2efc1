"""A flow's AI task: render the prompt, then cache → gate → budget → breaker → call → validate.

For one event: the answer cache is asked first (identical provider, model, rendered prompt and
parameters within the TTL). Otherwise the flow's chain — its provider, then its fallbacks in
order — is walked, through the flow's outage gate (:mod:`agents.outbound.gate`):

- a provider whose breaker is open is skipped; on each provider a 5xx, a timeout or a
  connection error is retried with jittered backoff up to ``max_attempts`` calls, then the next
  provider is tried;
- a 429 is not an attempt: the provider's budget pauses until its Retry-After / rate-limit
  reset time (capped at ``worker.retry_backoff_max_s``), and the call goes again;
- when every provider of the chain is skipped or exhausted, the flow is unavailable: the event
  waits on the gate, holding its runner slot and its offset, with every other event of the
  flow; one probe per backoff walks the chain again (one call per provider, past open
  breakers), and the first answer resumes them all;
- only permanent failures end in the DLQ: a 4xx other than 408/429 from a provider while no
  other provider of the chain answers (the fallbacks are still asked), an answer still invalid
  after its one re-ask (a fallback model is not asked: the prompt, not the provider, is the
  likely cause), an outage longer than the flow's ``max_outage_s``, or an event whose walk
  failed ``max_attempts`` times while the flow's other events were answered (the record's own
  problem, not an outage: the gate's rule, so ``max_attempts`` squared calls on its first
  provider). Counting walks, not calls, keeps random 5xx from dead-lettering: with 1 call in 9
  failing, 3 failed calls in a row happen to 1 event in 730, 9 to 1 in 390 million.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from agents import metrics
from agents.ai import spans
from agents.ai.breaker import CircuitBreaker
from agents.ai.budget import RateBudget
from agents.ai.output import compile_schema, parse_output
from agents.ai.provider import ChatClient, ChatRequest, Completion
from agents.outbound.gate import OutageGate, OutageTooLong
from agents.outbound.retry import RetriesExhausted, RetryPolicy
from schemas import templates
from schemas.clock import Clock
from schemas.config import WorkerSettings
from schemas.config_ai import AITaskConfig, ProviderConfig
from schemas.config_flows import FlowConfig
from schemas.errors import CircuitOpen, HookstreamError, InvalidModelOutput, RemoteError
from schemas.events import AIResult, EnrichedEvent, TokenUsage

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)


@dataclass
class ProviderRuntime:
    """One provider's client, budget and breaker: shared by every flow in the process."""

    config: ProviderConfig
    client: ChatClient
    budget: RateBudget
    breaker: CircuitBreaker

    @classmethod
    def build(cls, config: ProviderConfig, session: aiohttp.ClientSession) -> ProviderRuntime:
        # The clients (and aiohttp, ~40 ms to import) are imported here, by the worker's
        # start: the replay's pricer (streams.cli.replay_cost) builds tasks without them.
        from agents.ai.clients import client_for

        gauge = metrics.AI_BREAKER_STATE.labels(config.name)
        gauge.set(0)
        breaker = CircuitBreaker(
            config.name, config.breaker, on_change=lambda state: gauge.set(int(state))
        )
        return cls(config, client_for(config, session), RateBudget(config.budget), breaker)

    def cost_usd(
        self, model: str, answered_model: str, usage: TokenUsage, *, batch: bool = False
    ) -> float:
        """The price table's dollars for ``usage``; ``batch``: sent through the provider's
        batch API, at the model's ``batch_price_factor`` of the price."""
        price = self.config.prices.get(model) or self.config.prices.get(answered_model)
        if price is None:
            return 0.0
        factor = price.batch_price_factor if batch else 1.0
        return (
            factor
            * (
                usage.prompt_tokens * price.input_usd_per_mtok
                + usage.completion_tokens * price.output_usd_per_mtok
            )
            / 1_000_000
        )


@dataclass(frozen=True, slots=True)
class Target:
    runtime: ProviderRuntime
    model: str
    primary: bool


@dataclass
class _Calls:
    """What the calls for one event added up to."""

    count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    first_failure_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: BaseException | None = None
    completions: list[Completion] = field(default_factory=list)

    def usage(self) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )

    def failed(self, error: BaseException) -> None:
        now = datetime.now(UTC)
        self.first_failure_at = self.first_failure_at or now
        self.last_failure_at = now
        self.last_error = error


class _Unavailable(Exception):
    """A provider of the chain cannot answer this event now: skipped (open breaker) or its
    attempts exhausted. ``final``: it refused the request (a 4xx): waiting will not help."""

    def __init__(self, error: HookstreamError, *, final: bool) -> None:
        self.error = error
        self.final = final
        super().__init__(str(error))


@dataclass(frozen=True, slots=True)
class _OkMetrics:
    """The metric children an answered call updates, per (provider, model)."""

    calls: Any
    seconds: Any
    prompt_tokens: Any
    completion_tokens: Any
    cost_usd: Any

    @classmethod
    def of(cls, provider: str, model: str) -> _OkMetrics:
        return cls(
            metrics.AI_CALLS.labels(provider, model, "ok"),
            metrics.AI_CALL_SECONDS.labels(provider, model),
            metrics.AI_TOKENS.labels(provider, model, "prompt"),
            metrics.AI_TOKENS.labels(provider, model, "completion"),
            metrics.AI_COST_USD.labels(provider, model),
        )


@dataclass(frozen=True, slots=True)
class TaskFlow:
    """What an AI task reads of its flow: the name its metrics, gate and errors carry, and
    the task. A multi-step flow's step is named ``<flow>.<step>`` (flow names have no dots)."""

    name: str
    ai: AITaskConfig

    @classmethod
    def of(cls, flow: FlowConfig, step: str | None = None) -> TaskFlow:
        """The flow's ``ai`` (step None) or its step named ``step``."""
        for name, task in flow.tasks:
            if name == step:
                return cls(flow.name if step is None else f"{flow.name}.{step}", task)
        raise ValueError(f"flow {flow.name} has no AI task {step!r}")


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    result: AIResult
    cache_key: str | None  # set when the answer should be written to the cache


class AITask:
    def __init__(
        self,
        flow: FlowConfig,
        runtimes: Mapping[str, ProviderRuntime],
        worker: WorkerSettings,
        gate: OutageGate | None = None,
        calling: set[asyncio.Task[Any]] | None = None,
        step: str | None = None,
    ) -> None:
        """``gate``: the flow's outage gate; pass the same one to every task built for the
        flow (the stage rebuilds tasks when the HTTP session changes), else a new one.
        ``calling``: where the asyncio tasks now waiting on a provider are kept (the stage's
        rebalance must not cancel a call that may be paid for). ``step``: which step of a
        multi-step flow this task asks (None: the flow's ``ai``)."""
        self.flow = TaskFlow.of(flow, step)
        ai = self.flow.ai
        primary = runtimes[ai.provider]
        self.chain = [Target(primary, ai.model or primary.config.model, True)]
        for fallback in ai.fallbacks:
            runtime = runtimes[fallback.provider]
            self.chain.append(Target(runtime, fallback.model or runtime.config.model, False))
        self.system = templates.parse(ai.system)
        self.prompt = templates.parse(ai.prompt)
        # Dumping the event is the costly part of the render context: done only for a flow
        # whose templates read ``event``.
        self._reads_event = "event" in self.system.roots | self.prompt.roots
        # A step's task is named <flow>.<step>; a schema name is [A-Za-z0-9_-] only.
        self._schema_name = self.flow.name.replace("-", "_").replace(".", "_")
        self.output_model = compile_schema(self.flow.name, ai.output)
        self.policy = RetryPolicy(
            max_attempts=ai.max_attempts,
            backoff_s=worker.retry_backoff_s,
            backoff_max_s=worker.retry_backoff_max_s,
        )
        self.gate = gate or flow_gate(self.flow, worker)
        self.calling: set[asyncio.Task[Any]] = set() if calling is None else calling
        self._probes = metrics.AI_PROBES.labels(self.flow.name)
        # Metric children looked up once: ``labels()`` takes a lock and hashes per call.
        self._cache_hit = metrics.AI_CACHE.labels(self.flow.name, "hit")
        self._cache_miss = metrics.AI_CACHE.labels(self.flow.name, "miss")
        self._ok: dict[tuple[str, str], _OkMetrics] = {}

    @property
    def provider(self) -> ProviderConfig:
        return self.chain[0].runtime.config

    def request_for(
        self,
        enriched: EnrichedEvent,
        model: str | None = None,
        steps: Mapping[str, Any] | None = None,
    ) -> ChatRequest:
        """``steps``: a multi-step flow's earlier answers by step name (``steps.<name>``)."""
        context: dict[str, Any] = {
            "data": enriched.event.data,
            "enrichment": enriched.enrichment,
            "steps": steps or {},
        }
        if self._reads_event:
            context["event"] = enriched.event.model_dump(mode="json")
        return ChatRequest(
            model=model or self.chain[0].model,
            system=templates.render_text(self.system, context),
            prompt=templates.render_text(self.prompt, context),
            schema_name=self._schema_name,
            schema=self.flow.ai.output,
            temperature=self.flow.ai.temperature,
            max_tokens=self.flow.ai.max_tokens,
        )

    def requests_for(
        self, enriched: EnrichedEvent, steps: Mapping[str, Any] | None = None
    ) -> list[ChatRequest]:
        """One request per target of the chain. The prompt does not depend on the model, so
        it is rendered once (dumping the event for the template context is the costly part)."""
        base = self.request_for(enriched, steps=steps)
        return [
            base if target.model == base.model else dataclasses.replace(base, model=target.model)
            for target in self.chain
        ]

    def cached(
        self,
        enriched: EnrichedEvent,
        cache: Any,
        requests: Sequence[ChatRequest] | None = None,
    ) -> AIResult | None:
        """A result from the answer cache, trying the chain's models in order."""
        if cache is None or not self.flow.ai.cache:
            return None
        if requests is None:
            requests = self.requests_for(enriched)
        for target, request in zip(self.chain, requests, strict=True):
            hit = cache.get(request.cache_key(target.runtime.config.name))
            if hit is not None:
                self._cache_hit.inc()
                return AIResult(
                    flow=self.flow.name,
                    event=enriched.event,
                    enrichment=enriched.enrichment,
                    provider=hit["provider"],
                    model=hit["model"],
                    output=hit["output"],
                    usage=TokenUsage.model_validate(hit["usage"]),
                    latency_ms=0.0,
                    attempts=0,
                    cached=True,
                    fallback=not target.primary,
                )
        self._cache_miss.inc()
        return None

    async def _call(
        self, target: Target, request: ChatRequest, calls: _Calls, *, probe: bool
    ) -> Completion:
        runtime = target.runtime
        name = runtime.config.name
        try:
            runtime.breaker.before_call(force=probe)
        except CircuitOpen as exc:
            calls.failed(exc)
            raise
        estimate = request.estimated_tokens()
        waited_s = await runtime.budget.acquire(estimate)
        if waited_s:
            metrics.AI_BUDGET_WAIT_SECONDS.labels(name).inc(waited_s)
        if calls.count:
            metrics.AI_RETRIES.labels(name).inc()
        calls.count += 1
        started = time.perf_counter()
        settled = False
        current = asyncio.current_task()
        if current is not None:
            self.calling.add(current)
        try:
            completion = await spans.complete(
                runtime.client, runtime.config, request, runtime.cost_usd
            )
            settled = True
        except RemoteError as exc:
            settled = True
            calls.failed(exc)
            runtime.budget.correct(estimate, 0)
            if exc.status == 429:
                metrics.AI_RATE_LIMITED.labels(name).inc()
                metrics.AI_CALLS.labels(name, target.model, "rate_limited").inc()
                told_s = exc.retry_after_s
                pause_s = self.policy.backoff_s if told_s is None else told_s
                runtime.budget.pause(min(pause_s, self.policy.backoff_max_s))
                runtime.breaker.on_neutral()
            else:
                metrics.AI_CALLS.labels(name, target.model, "error").inc()
                if exc.retriable:
                    runtime.breaker.on_failure()
                else:
                    runtime.breaker.on_neutral()
            raise
        finally:
            if current is not None:
                self.calling.discard(current)
            if not settled:  # cancelled: say nothing about the provider's health
                runtime.breaker.on_neutral()
        runtime.breaker.on_success()
        usage = completion.usage
        runtime.budget.correct(estimate, usage.total_tokens or estimate)
        cost_usd = runtime.cost_usd(target.model, completion.model, usage)
        calls.prompt_tokens += usage.prompt_tokens
        calls.completion_tokens += usage.completion_tokens
        calls.cost_usd += cost_usd
        calls.completions.append(completion)
        ok = self._ok_metrics(name, target.model)
        ok.calls.inc()
        ok.seconds.observe(time.perf_counter() - started)
        ok.prompt_tokens.inc(usage.prompt_tokens)
        ok.completion_tokens.inc(usage.completion_tokens)
        ok.cost_usd.inc(cost_usd)
        return completion

    def _ok_metrics(self, provider: str, model: str) -> _OkMetrics:
        found = self._ok.get((provider, model))
        if found is None:
            found = self._ok[(provider, model)] = _OkMetrics.of(provider, model)
        return found

    async def _retried(
        self, target: Target, request: ChatRequest, calls: _Calls, *, probe: bool
    ) -> Completion:
        """One provider's answer; raises _Unavailable when it is skipped or exhausted.

        A 429 goes again once the budget's pause is over, without counting as an attempt;
        a probe makes one call (its gate's backoff is the retry). Only a rate limit that lasts
        longer than the flow's ``max_outage_s`` ends in OutageTooLong.
        """
        runtime = target.runtime
        max_attempts = 1 if probe else self.policy.max_attempts
        failures = limited = 0
        limited_since_s: float | None = None
        while True:
            try:
                return await self._call(target, request, calls, probe=probe)
            except CircuitOpen as exc:
                raise _Unavailable(exc, final=False) from None
            except RemoteError as exc:
                if exc.status == 429:
                    now_s = self.gate.clock.time()
                    limited_since_s = now_s if limited_since_s is None else limited_since_s
                    limit_s = self.flow.ai.max_outage_s
                    if limit_s is not None and now_s - limited_since_s >= limit_s:
                        raise OutageTooLong(
                            f"flow {self.flow.name}: provider {runtime.config.name} rate "
                            f"limited (429) for {now_s - limited_since_s:.1f} s, longer "
                            f"than ai.max_outage_s ({limit_s:g} s)",
                            stage="ai",
                        ) from None
                    limited += 1
                    if limited > 1:  # limited again: no spinning on a Retry-After of 0
                        exponent = min(limited - 2, 16)
                        floor_s = max(self.policy.backoff_s, 0.05) * 2.0**exponent
                        await self.gate.sleep(min(floor_s, self.policy.backoff_max_s))
                    continue  # the budget's pause is the wait; not an attempt
                if not exc.retriable:  # a 4xx: this provider will never take this request
                    raise _Unavailable(exc, final=True) from None
                failures += 1
                if failures >= max_attempts:
                    raise _Unavailable(exc, final=False) from None
                pause_s = self.policy.delay_s(failures, exc)
                log.info(
                    "flow %s provider %s failed (attempt %d/%d): %s; retrying in %.2f s",
                    self.flow.name,
                    runtime.config.name,
                    failures,
                    max_attempts,
                    exc,
                    pause_s,
                )
                await self.gate.sleep(pause_s)

    async def _answer(
        self, target: Target, request: ChatRequest, calls: _Calls, *, probe: bool
    ) -> tuple[dict[str, Any], bool]:
        """(validated output, re-asked?) from one provider; raises _Unavailable, or _Final
        when the answer is still invalid after the re-ask."""
        completion = await self._retried(target, request, calls, probe=probe)
        try:
            return parse_output(self.output_model, completion.content), False
        except InvalidModelOutput as first:
            metrics.AI_CALLS.labels(
                target.runtime.config.name, target.model, "invalid_output"
            ).inc()
            calls.failed(first)
            reason = str(first)
        again = request.reask(completion.content, reason)
        completion = await self._retried(target, again, calls, probe=probe)
        try:
            return parse_output(self.output_model, completion.content), True
        except InvalidModelOutput as second:
            error = InvalidModelOutput(
                f"still invalid after one re-ask: {second} (first answer: {reason})",
                stage="ai",
            )
            calls.failed(error)
            raise _Final(error) from None

    async def run(
        self, enriched: EnrichedEvent, requests: Sequence[ChatRequest] | None = None
    ) -> TaskOutcome:
        """The event's outcome, waiting through outages; ``requests`` are
        :meth:`requests_for`'s, when already rendered. Raises RetriesExhausted (its
        ``attempts`` the calls really made) for what is dead-lettered."""
        calls = _Calls()
        if requests is None:
            requests = self.requests_for(enriched)
        chosen = requests

        async def walk(probe: bool) -> TaskOutcome:
            if probe:
                self._probes.inc()
            return await self._walk(enriched, chosen, calls, probe=probe)

        try:
            outcome, _ = await self.gate.call_probing(walk, max_attempts=self.policy.max_attempts)
        except RetriesExhausted as exc:
            last = exc.last.error if isinstance(exc.last, _Final) else exc.last
            if isinstance(last, OutageTooLong):
                calls.failed(last)
            raise self._exhausted(calls, last) from None
        return outcome

    async def _walk(
        self,
        enriched: EnrichedEvent,
        requests: Sequence[ChatRequest],
        calls: _Calls,
        *,
        probe: bool,
    ) -> TaskOutcome:
        """One walk of the chain. Raises a retriable error when no provider could answer
        (the gate pauses the flow), _Final when a provider refused the request (a 4xx)."""
        missed: list[_Unavailable] = []
        for target, request in zip(self.chain, requests, strict=True):
            try:
                output, reasked = await self._answer(target, request, calls, probe=probe)
            except _Unavailable as exc:
                missed.append(exc)
                continue
            if not target.primary:
                metrics.AI_FALLBACKS.labels(self.flow.name).inc()
            completion = calls.completions[-1]
            result = AIResult(
                flow=self.flow.name,
                event=enriched.event,
                enrichment=enriched.enrichment,
                provider=target.runtime.config.name,
                model=completion.model,
                output=output,
                usage=calls.usage(),
                latency_ms=completion.latency_ms,
                attempts=calls.count,
                cost_usd=calls.cost_usd,
                fallback=not target.primary,
                reasked=reasked,
            )
            cache_key = (
                request.cache_key(target.runtime.config.name) if self.flow.ai.cache else None
            )
            return TaskOutcome(result, cache_key)
        refused = [m for m in missed if m.final]
        if refused:
            raise _Final(refused[-1].error)
        _raise_outage(missed)

    @staticmethod
    def _exhausted(calls: _Calls, error: BaseException | None) -> RetriesExhausted:
        now = datetime.now(UTC)
        last = error or CircuitOpen("every provider of the flow is unavailable", stage="ai")
        return RetriesExhausted(
            last,
            calls.count,
            calls.first_failure_at or now,
            calls.last_failure_at or now,
        )


def _raise_outage(missed: Sequence[_Unavailable]) -> NoReturn:
    """Raise the error the gate pauses on: the one whose Retry-After comes soonest, else the
    last provider's (an open breaker's CircuitOpen: the gate's own backoff then)."""
    told = [
        m.error
        for m in missed
        if isinstance(m.error, RemoteError) and m.error.retry_after_s is not None
    ]
    if told:
        raise min(told, key=lambda e: e.retry_after_s or 0.0)
    raise missed[-1].error


def flow_gate(
    flow: FlowConfig | TaskFlow, worker: WorkerSettings, *, clock: Clock | None = None
) -> OutageGate:
    """The flow's outage gate (one per step of a multi-step flow, ``flow`` its TaskFlow),
    its pauses shown as ``hookstream_ai_flow_paused{flow}``."""
    if isinstance(flow, FlowConfig):
        flow = TaskFlow.of(flow)
    paused = metrics.AI_FLOW_PAUSED.labels(flow.name)
    paused.set(0)

    def on_pause(cause: str) -> None:
        paused.set(1)
        metrics.AI_FLOW_PAUSES.labels(flow.name, cause).inc()

    def on_resume(_paused_s: float) -> None:
        paused.set(0)

    return OutageGate(
        f"flow {flow.name}: its provider and every fallback",
        backoff_s=worker.retry_backoff_s,
        backoff_max_s=worker.retry_backoff_max_s,
        clock=clock,
        max_outage_s=flow.ai.max_outage_s,
        on_pause=on_pause,
        on_resume=on_resume,
    )


class _Final(HookstreamError):
    """Internal: the event fails for good (an answer still invalid after the re-ask, or a
    provider that refused the request): not retried, not paused on."""

    def __init__(self, error: HookstreamError) -> None:
        self.error = error
        super().__init__(str(error))


def cache_entry(result: AIResult) -> dict[str, Any]:
    """What the answer cache keeps of a result."""
    return {
        "provider": result.provider,
        "model": result.model,
        "output": result.output,
        "usage": result.usage.model_dump(),
    }
