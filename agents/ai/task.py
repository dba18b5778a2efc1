"""A flow's AI task: render the prompt, then cache → budget → breaker → call → validate.

For one event: the answer cache is asked first (identical provider, model, rendered prompt and
parameters within the TTL). Otherwise the flow's chain — its provider, then its fallbacks in
order — is walked: a provider whose breaker is open is skipped; on each provider the call is
retried (429 after the provider's Retry-After/reset time, 5xx, timeouts and connection errors
with jittered backoff) up to ``max_attempts``; when those are exhausted the next provider is
tried. An answer that does not fit the schema gets exactly one re-ask carrying the validation
errors; still invalid, the event is dead-lettered with them (a fallback model is not asked:
the prompt, not the provider, is the likely cause).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from agents import metrics
from agents.ai.breaker import CircuitBreaker
from agents.ai.budget import RateBudget
from agents.ai.clients import client_for
from agents.ai.output import compile_schema, parse_output
from agents.ai.provider import ChatClient, ChatRequest, Completion
from agents.outbound.retry import RetriesExhausted, RetryPolicy, with_retries
from schemas import templates
from schemas.config import WorkerSettings
from schemas.config_ai import ProviderConfig
from schemas.config_flows import FlowConfig
from schemas.errors import CircuitOpen, HookstreamError, InvalidModelOutput, RemoteError
from schemas.events import AIResult, EnrichedEvent, TokenUsage


@dataclass
class ProviderRuntime:
    """One provider's client, budget and breaker: shared by every flow in the process."""

    config: ProviderConfig
    client: ChatClient
    budget: RateBudget
    breaker: CircuitBreaker

    @classmethod
    def build(cls, config: ProviderConfig, session: aiohttp.ClientSession) -> ProviderRuntime:
        gauge = metrics.AI_BREAKER_STATE.labels(config.name)
        gauge.set(0)
        breaker = CircuitBreaker(
            config.name, config.breaker, on_change=lambda state: gauge.set(int(state))
        )
        return cls(config, client_for(config, session), RateBudget(config.budget), breaker)

    def cost_usd(self, model: str, answered_model: str, usage: TokenUsage) -> float:
        price = self.config.prices.get(model) or self.config.prices.get(answered_model)
        if price is None:
            return 0.0
        return (
            usage.prompt_tokens * price.input_usd_per_mtok
            + usage.completion_tokens * price.output_usd_per_mtok
        ) / 1_000_000


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


class _Skip(Exception):
    """Move on to the next provider of the chain (not a HookstreamError: no retry)."""


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
class TaskOutcome:
    result: AIResult
    cache_key: str | None  # set when the answer should be written to the cache


class AITask:
    def __init__(
        self,
        flow: FlowConfig,
        runtimes: Mapping[str, ProviderRuntime],
        worker: WorkerSettings,
    ) -> None:
        self.flow = flow
        primary = runtimes[flow.ai.provider]
        self.chain = [Target(primary, flow.ai.model or primary.config.model, True)]
        for fallback in flow.ai.fallbacks:
            runtime = runtimes[fallback.provider]
            self.chain.append(Target(runtime, fallback.model or runtime.config.model, False))
        self.system = templates.parse(flow.ai.system)
        self.prompt = templates.parse(flow.ai.prompt)
        self.output_model = compile_schema(flow.name, flow.ai.output)
        self.policy = RetryPolicy(
            max_attempts=flow.ai.max_attempts,
            backoff_s=worker.retry_backoff_s,
            backoff_max_s=worker.retry_backoff_max_s,
        )
        # Metric children looked up once: ``labels()`` takes a lock and hashes per call.
        self._cache_hit = metrics.AI_CACHE.labels(flow.name, "hit")
        self._cache_miss = metrics.AI_CACHE.labels(flow.name, "miss")
        self._ok: dict[tuple[str, str], _OkMetrics] = {}

    @property
    def provider(self) -> ProviderConfig:
        return self.chain[0].runtime.config

    def request_for(self, enriched: EnrichedEvent, model: str | None = None) -> ChatRequest:
        context: dict[str, Any] = {
            "event": enriched.event.model_dump(mode="json"),
            "data": enriched.event.data,
            "enrichment": enriched.enrichment,
        }
        return ChatRequest(
            model=model or self.chain[0].model,
            system=templates.render_text(self.system, context),
            prompt=templates.render_text(self.prompt, context),
            schema_name=self.flow.name.replace("-", "_"),
            schema=self.flow.ai.output,
            temperature=self.flow.ai.temperature,
            max_tokens=self.flow.ai.max_tokens,
        )

    def requests_for(self, enriched: EnrichedEvent) -> list[ChatRequest]:
        """One request per target of the chain. The prompt does not depend on the model, so
        it is rendered once (dumping the event for the template context is the costly part)."""
        base = self.request_for(enriched)
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
        self, target: Target, request: ChatRequest, calls: _Calls, *, last: bool
    ) -> Completion:
        runtime = target.runtime
        name = runtime.config.name
        try:
            runtime.breaker.before_call()
        except CircuitOpen as exc:
            calls.failed(exc)
            if not last:
                raise _Skip from exc
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
        try:
            completion = await runtime.client.complete(request)
            settled = True
        except RemoteError as exc:
            settled = True
            calls.failed(exc)
            runtime.budget.correct(estimate, 0)
            if exc.status == 429:
                metrics.AI_RATE_LIMITED.labels(name).inc()
                metrics.AI_CALLS.labels(name, target.model, "rate_limited").inc()
                runtime.budget.pause(
                    exc.retry_after_s if exc.retry_after_s is not None else self.policy.backoff_s
                )
                runtime.breaker.on_neutral()
            else:
                metrics.AI_CALLS.labels(name, target.model, "error").inc()
                if exc.retriable:
                    runtime.breaker.on_failure()
                else:
                    runtime.breaker.on_neutral()
            raise
        finally:
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
        self, target: Target, request: ChatRequest, calls: _Calls, *, last: bool
    ) -> Completion:
        async def attempt(_: int) -> Completion:
            return await self._call(target, request, calls, last=last)

        completion, _ = await with_retries(
            attempt,
            self.policy,
            what=f"flow {self.flow.name} provider {target.runtime.config.name}",
        )
        return completion

    async def _answer(
        self, target: Target, request: ChatRequest, calls: _Calls, *, last: bool
    ) -> tuple[dict[str, Any], bool]:
        """(validated output, re-asked?) from one provider; raises RetriesExhausted."""
        completion = await self._retried(target, request, calls, last=last)
        try:
            return parse_output(self.output_model, completion.content), False
        except InvalidModelOutput as first:
            metrics.AI_CALLS.labels(
                target.runtime.config.name, target.model, "invalid_output"
            ).inc()
            calls.failed(first)
            reason = str(first)
        again = request.reask(completion.content, reason)
        completion = await self._retried(target, again, calls, last=last)
        try:
            return parse_output(self.output_model, completion.content), True
        except InvalidModelOutput as second:
            error = InvalidModelOutput(
                f"still invalid after one re-ask: {second} (first answer: {reason})",
                stage="ai",
            )
            calls.failed(error)
            raise _Invalid(error) from None

    async def run(
        self, enriched: EnrichedEvent, requests: Sequence[ChatRequest] | None = None
    ) -> TaskOutcome:
        """Walk the chain; ``requests`` are :meth:`requests_for`'s, when already rendered."""
        calls = _Calls()
        if requests is None:
            requests = self.requests_for(enriched)
        for index, (target, request) in enumerate(zip(self.chain, requests, strict=True)):
            last = index == len(self.chain) - 1
            try:
                output, reasked = await self._answer(target, request, calls, last=last)
            except _Skip:
                continue
            except _Invalid as exc:
                raise self._exhausted(calls, exc.error) from None
            except RetriesExhausted as exc:
                if last:
                    raise self._exhausted(calls, exc.last) from None
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
        raise self._exhausted(calls, calls.last_error)

    @staticmethod
    def _exhausted(calls: _Calls, error: BaseException | None) -> RetriesExhausted:
        now = datetime.now(UTC)
        last = error or CircuitOpen("every provider of the flow is unavailable", stage="ai")
        return RetriesExhausted(
            last,
            max(calls.count, 1),
            calls.first_failure_at or now,
            calls.last_failure_at or now,
        )


class _Invalid(HookstreamError):
    """Internal: the answer is still invalid after the re-ask (not retried, not fallen back)."""

    def __init__(self, error: InvalidModelOutput) -> None:
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
