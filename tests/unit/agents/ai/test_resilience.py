"""Budgets, the circuit breaker, rate-limit headers and the task's chain: pure logic, fake clock
and fake providers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents.ai.anthropic import AnthropicMessages
from agents.ai.breaker import BreakerState, CircuitBreaker
from agents.ai.budget import WINDOW_S, RateBudget
from agents.ai.provider import ChatRequest, Completion
from agents.ai.task import AITask, ProviderRuntime
from agents.outbound.http import retry_after_s
from agents.outbound.retry import RetriesExhausted
from schemas.config import WorkerSettings
from schemas.config_ai import (
    AITaskConfig,
    BreakerConfig,
    BudgetConfig,
    FallbackConfig,
    PricingConfig,
    ProviderConfig,
)
from schemas.config_flows import FlowConfig, MatchConfig
from schemas.errors import CircuitOpen, InvalidModelOutput, RetriableRemoteError
from schemas.events import CloudEvent, EnrichedEvent, TokenUsage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_the_threshold_then_lets_one_trial_through() -> None:
    clock = Clock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(
        "p", BreakerConfig(failure_threshold=2, open_s=10), clock=clock, on_change=changes.append
    )
    breaker.before_call()
    breaker.on_failure()
    breaker.before_call()
    breaker.on_failure()
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.now += 10
    breaker.before_call()  # the trial
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # only one at a time
    breaker.on_success()
    breaker.before_call()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_a_failed_trial_opens_the_breaker_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker("p", BreakerConfig(failure_threshold=1, open_s=5), clock=clock)
    breaker.on_failure()
    clock.now += 5
    breaker.before_call()
    breaker.on_failure()
    assert breaker.state == BreakerState.OPEN
    assert breaker.open_for_s() == 5


async def test_budget_waits_for_requests_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    monkeypatch.setattr("agents.ai.budget.asyncio.sleep", sleep)
    budget = RateBudget(BudgetConfig(requests_per_minute=60), clock=clock)
    for _ in range(60):
        assert await budget.acquire(10) == 0
    # A sliding minute (agents.ai.budget): the 61st waits until the first leaves it.
    assert await budget.acquire(10) == pytest.approx(WINDOW_S)
    assert slept == [pytest.approx(WINDOW_S)]


async def test_budget_tokens_are_corrected_with_usage_and_paused_by_429(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr("agents.ai.budget.asyncio.sleep", sleep)
    budget = RateBudget(BudgetConfig(tokens_per_minute=600), clock=clock)
    await budget.acquire(600)
    budget.correct(600, 100)  # the estimate was 500 too high
    assert budget.tokens_available == pytest.approx(500)
    budget.pause(3.0)
    assert await budget.acquire(1) == pytest.approx(3.0)


def test_rate_limit_reset_headers() -> None:
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"x-ratelimit-reset-requests": "1m30s"}) == 90
    assert retry_after_s(
        {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "6s"}
    ) == pytest.approx(6)
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    value = retry_after_s({"anthropic-ratelimit-requests-reset": soon})
    assert value is not None
    assert 28 < value <= 30
    assert retry_after_s({"x-ratelimit-reset-requests": "soon"}) is None


def test_anthropic_answer_is_the_forced_tool_call_input() -> None:
    body = {"content": [{"type": "tool_use", "name": "t", "input": {"sentiment": "positive"}}]}
    assert AnthropicMessages.answer_text(body) == '{"sentiment":"positive"}'
    assert AnthropicMessages.answer_text({"content": [{"type": "text", "text": "{}"}]}) == "{}"


# --- the task's chain ------------------------------------------------------------------------


@dataclass
class FakeClient:
    provider: ProviderConfig
    answers: list[Callable[[ChatRequest], str]]
    requests: list[ChatRequest] = field(default_factory=list)

    async def complete(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return Completion(
            answer(request),
            request.model,
            TokenUsage(prompt_tokens=1000, completion_tokens=100, total_tokens=1100),
            12.0,
        )


def ok(_: ChatRequest) -> str:
    return '{"sentiment": "positive"}'


def bad(_: ChatRequest) -> str:
    return "Sure! {sentiment: positive"


def down(_: ChatRequest) -> str:
    raise RetriableRemoteError("HTTP 503", stage="ai", status=503)


def provider(name: str, **extra: Any) -> ProviderConfig:
    return ProviderConfig(name=name, base_url="http://x/v1", model=f"{name}-model", **extra)


def task_with(clients: dict[str, FakeClient], fallbacks: tuple[str, ...] = ()) -> AITask:
    flow = FlowConfig(
        name="f",
        match=MatchConfig(source="s"),
        ai=AITaskConfig(
            provider="a",
            prompt="{{ data.text }}",
            output={
                "type": "object",
                "properties": {"sentiment": {"type": "string"}},
                "required": ["sentiment"],
            },
            fallbacks=tuple(FallbackConfig(provider=f) for f in fallbacks),
        ),
    )
    runtimes = {
        name: ProviderRuntime(
            client.provider,
            client,
            RateBudget(client.provider.budget),
            CircuitBreaker(name, client.provider.breaker),
        )
        for name, client in clients.items()
    }
    return AITask(flow, runtimes, WorkerSettings(retry_backoff_s=0, retry_backoff_max_s=0))


def event() -> EnrichedEvent:
    cloud = CloudEvent(
        id="1",
        source="s",
        type="t",
        time=datetime.now(UTC),
        data={"text": "hi"},
        partitionkey="k",
        traceid="x",
    )
    return EnrichedEvent(flow="f", event=cloud)


async def test_an_invalid_answer_is_reasked_once_with_its_errors() -> None:
    prices = {"a-model": PricingConfig(input_usd_per_mtok=1.0, output_usd_per_mtok=10.0)}
    client = FakeClient(provider("a", prices=prices), [bad, ok])
    outcome = await task_with({"a": client}).run(event())
    assert outcome.result.reasked
    assert outcome.result.attempts == 2
    assert outcome.result.usage.prompt_tokens == 2000
    assert outcome.result.cost_usd == pytest.approx((2000 * 1.0 + 200 * 10.0) / 1e6)
    correction = client.requests[1].followups[-1][1]
    assert correction.startswith("That answer is not valid:")
    assert "not JSON" in correction


async def test_still_invalid_after_the_reask_is_not_sent_to_the_fallback() -> None:
    primary, backup = FakeClient(provider("a"), [bad]), FakeClient(provider("b"), [ok])
    with pytest.raises(RetriesExhausted) as caught:
        await task_with({"a": primary, "b": backup}, ("b",)).run(event())
    assert isinstance(caught.value.last, InvalidModelOutput)
    assert caught.value.attempts == 2
    assert backup.requests == []


async def test_exhausted_primary_hands_over_to_the_fallback_then_is_skipped_while_open() -> None:
    primary = FakeClient(provider("a", breaker=BreakerConfig(failure_threshold=3)), [down])
    backup = FakeClient(provider("b"), [ok])
    task = task_with({"a": primary, "b": backup}, ("b",))
    first = await task.run(event())
    assert (first.result.provider, first.result.fallback, first.result.attempts) == ("b", True, 4)
    second = await task.run(event())  # the primary's breaker is open now: not called
    assert (second.result.provider, second.result.attempts) == ("b", 1)
    assert len(primary.requests) == 3
