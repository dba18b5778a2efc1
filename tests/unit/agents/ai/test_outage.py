"""A flow whose providers are all down pauses on its outage gate instead of dead-lettering.

Time is a :class:`~tests.support.clock.ManualClock`: the flow's gate, its in-walk backoff and
the breakers all read it, and :meth:`ManualClock.run` moves it only while every task waits,
so each call's instant is exact and the probes' spacing is checked to the value. Retry jitter
is pinned to its ceiling (``random.uniform`` → its upper bound) for the same reason.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from agents.ai.breaker import CircuitBreaker
from agents.ai.budget import RateBudget
from agents.ai.provider import ChatRequest, Completion
from agents.ai.task import AITask, ProviderRuntime, TaskOutcome, flow_gate
from agents.outbound.gate import OutageGate, OutageTooLong
from agents.outbound.retry import RetriesExhausted
from schemas.config import WorkerSettings
from schemas.config_ai import AITaskConfig, BreakerConfig, FallbackConfig, ProviderConfig
from schemas.config_flows import FlowConfig, MatchConfig
from schemas.errors import PermanentRemoteError, RetriableRemoteError
from schemas.events import CloudEvent, EnrichedEvent, TokenUsage
from tests.support.clock import ManualClock

T0_S = 1000.0
ANSWER = '{"sentiment": "positive"}'
# Every call's outcome, chosen from (clock reading, the request): None answers, else raised.
PAUSED = {"flow": "f"}
Fault = Callable[[float, ChatRequest], Exception | None]


@pytest.fixture(autouse=True)
def _no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agents.outbound.retry.random.uniform", lambda _low, high: high)


@dataclass
class Provider:
    """A provider on the manual clock; logs (instant, gate open?, prompt) of each call."""

    name: str
    clock: ManualClock
    fault: Fault
    gate: OutageGate | None = None
    calls: list[tuple[float, bool, str]] = field(default_factory=list)
    paused_gauge: list[float | None] = field(default_factory=list)

    provider: ProviderConfig = field(init=False)

    def __post_init__(self) -> None:
        self.provider = ProviderConfig(
            name=self.name,
            base_url="http://x/v1",
            model=f"{self.name}-model",
            breaker=BreakerConfig(failure_threshold=2, open_s=3600),
        )

    async def complete(self, request: ChatRequest) -> Completion:
        now_s = self.clock.time()
        self.calls.append((now_s, self.gate is None or self.gate.is_open, request.prompt))
        self.paused_gauge.append(REGISTRY.get_sample_value("hookstream_ai_flow_paused", PAUSED))
        error = self.fault(now_s, request)
        if error is not None:
            raise error
        usage = TokenUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
        return Completion(ANSWER, request.model, usage, 1.0)


def down_until(end_s: float) -> Fault:
    def fault(now_s: float, _request: ChatRequest) -> Exception | None:
        if now_s < end_s:
            return RetriableRemoteError("HTTP 500 (simulated)", stage="ai", status=500)
        return None

    return fault


def task_for(
    clock: ManualClock,
    providers: list[Provider],
    *,
    max_attempts: int = 3,
    max_outage_s: float | None = None,
    backoff_s: float = 0.5,
    backoff_max_s: float = 2.0,
) -> AITask:
    primary, *fallbacks = providers
    flow = FlowConfig(
        name="f",
        match=MatchConfig(source="s"),
        ai=AITaskConfig(
            provider=primary.name,
            prompt="{{ data.text }}",
            output={
                "type": "object",
                "properties": {"sentiment": {"type": "string"}},
                "required": ["sentiment"],
            },
            fallbacks=tuple(FallbackConfig(provider=p.name) for p in fallbacks),
            max_attempts=max_attempts,
            max_outage_s=max_outage_s,
        ),
    )
    worker = WorkerSettings(retry_backoff_s=backoff_s, retry_backoff_max_s=backoff_max_s)
    gate = flow_gate(flow, worker, clock=clock)
    runtimes = {}
    for provider in providers:
        provider.gate = gate
        config = provider.provider
        breaker = CircuitBreaker(provider.name, config.breaker, clock=clock.time)
        runtimes[provider.name] = ProviderRuntime(
            config, provider, RateBudget(config.budget), breaker
        )
    return AITask(flow, runtimes, worker, gate)


def event(text: str) -> EnrichedEvent:
    cloud = CloudEvent(
        id=text,
        source="s",
        type="t",
        time=datetime.now(UTC),
        data={"text": text},
        partitionkey=text,
        traceid="x",
    )
    return EnrichedEvent(flow="f", event=cloud)


def calls_of(providers: list[Provider], text: str) -> int:
    return sum(1 for p in providers for _, _, prompt in p.calls if prompt == text)


async def run_all(clock: ManualClock, task: AITask, texts: list[str]) -> list[TaskOutcome]:
    runs = [asyncio.create_task(task.run(event(text))) for text in texts]
    await clock.run(lambda: all(r.done() for r in runs))
    return [r.result() for r in runs]


async def test_an_outage_of_every_provider_pauses_the_flow_and_probes_once_per_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pauses_before = REGISTRY.get_sample_value(
        "hookstream_ai_flow_pauses_total", {"flow": "f", "cause": "CircuitOpen"}
    )
    clock = ManualClock(T0_S)
    back_s = T0_S + 10.0
    a = Provider("a", clock, down_until(back_s))
    b = Provider("b", clock, down_until(back_s))
    task = task_for(clock, [a, b])
    texts = [f"event {i}" for i in range(6)]
    outcomes = await run_all(clock, task, texts)
    # Nobody was dead-lettered, and each result says how many calls its event really took.
    assert [o.result.event.id for o in outcomes] == texts
    for text, outcome in zip(texts, outcomes, strict=True):
        assert outcome.result.attempts == calls_of([a, b], text)
        assert (outcome.result.provider, outcome.result.fallback) == ("a", False)
    # While the gate was closed, only probes called: both providers (past their open breakers)
    # at each probe instant, backoff doubling from 0.5 s to its 2 s cap; the first answered
    # probe (a, at or after back_s) resumed everyone.
    closed = sorted({t for p in (a, b) for t, is_open, _ in p.calls if not is_open})
    gaps = [round(later - earlier, 6) for earlier, later in itertools.pairwise(closed)]
    assert gaps[:2] == [1.0, 2.0]
    assert set(gaps[2:]) == {2.0}
    assert closed[-1] >= back_s > closed[-2]
    assert [t for t, is_open, _ in b.calls if not is_open] == closed[:-1]  # b: not at the last
    assert task.gate.pauses == 1
    assert task.gate.is_open
    assert a.calls[-1][0] == closed[-1]  # the others went at once after the probe
    # Shown: the gauge was 1 at every probe and is 0 again; one pause counted, by its cause;
    # one WARNING when the flow paused and one when it resumed, with the time paused.
    assert {g for (_, is_open, _), g in zip(a.calls, a.paused_gauge, strict=True) if not is_open}
    assert all(
        g == 1 for (_, is_open, _), g in zip(a.calls, a.paused_gauge, strict=True) if not is_open
    )
    assert REGISTRY.get_sample_value("hookstream_ai_flow_paused", PAUSED) == 0
    pauses_after = REGISTRY.get_sample_value(
        "hookstream_ai_flow_pauses_total", {"flow": "f", "cause": "CircuitOpen"}
    )
    assert (pauses_after or 0) - (pauses_before or 0) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings
    assert "pausing" in warnings[0]
    assert "CircuitOpen" in warnings[0]
    assert "answers again after" in warnings[1]
    assert "s paused" in warnings[1]


async def test_a_429_never_uses_up_an_attempt() -> None:
    clock = ManualClock(T0_S)
    limited = 0

    def fault(_now_s: float, _request: ChatRequest) -> Exception | None:
        nonlocal limited
        if limited < 5:
            limited += 1
            return RetriableRemoteError("HTTP 429", stage="ai", status=429, retry_after_s=0.0)
        return None

    a = Provider("a", clock, fault)
    task = task_for(clock, [a], max_attempts=1)
    [outcome] = await run_all(clock, task, ["rate limited"])
    assert outcome.result.attempts == 6  # five 429s and the answer, with max_attempts 1
    assert task.gate.pauses == 0


async def test_a_record_the_provider_fails_while_answering_others_is_dead_lettered() -> None:
    clock = ManualClock(T0_S)

    def fault(_now_s: float, request: ChatRequest) -> Exception | None:
        if request.prompt == "poison":
            return RetriableRemoteError("HTTP 500", stage="ai", status=500)
        return None

    a = Provider("a", clock, fault)
    task = task_for(clock, [a], max_attempts=3)
    poison = asyncio.create_task(task.run(event("poison")))
    answered: list[TaskOutcome] = []

    async def others() -> None:  # a steady stream of events the provider answers
        for i in range(200):
            answered.append(await task.run(event(f"fine {i}")))
            await clock.sleep(0.1)

    stream = asyncio.create_task(others())
    await clock.run(poison.done)
    with pytest.raises(RetriesExhausted) as caught:
        poison.result()
    assert isinstance(caught.value.last, RetriableRemoteError)
    # max_attempts (3) walks, each of max_attempts calls, failed while others were answered.
    assert caught.value.attempts == 9 == calls_of([a], "poison")
    assert task.gate.pauses == 0  # the others never stopped
    stream.cancel()
    await asyncio.gather(stream, return_exceptions=True)
    assert answered


async def test_a_4xx_is_dead_lettered_at_once_after_the_fallback_refuses_too() -> None:
    clock = ManualClock(T0_S)

    def refuse(_now_s: float, _request: ChatRequest) -> Exception | None:
        return PermanentRemoteError("HTTP 400", stage="ai", status=400)

    a, b = Provider("a", clock, refuse), Provider("b", clock, refuse)
    task = task_for(clock, [a, b])
    run = asyncio.create_task(task.run(event("wrong")))
    await clock.run(run.done)
    with pytest.raises(RetriesExhausted) as caught:
        run.result()
    assert isinstance(caught.value.last, PermanentRemoteError)
    assert caught.value.attempts == 2  # one call each, no retry
    assert task.gate.is_open


async def test_an_outage_longer_than_max_outage_s_dead_letters_with_a_clear_error() -> None:
    clock = ManualClock(T0_S)
    a = Provider("a", clock, down_until(float("inf")))
    task = task_for(clock, [a], max_outage_s=5.0)
    runs = [asyncio.create_task(task.run(event(f"late {i}"))) for i in range(3)]
    ended_s: list[float] = []
    for run in runs:
        run.add_done_callback(lambda _run: ended_s.append(clock.time()))
    await clock.run(lambda: all(r.done() for r in runs))
    # At T0 two fail (the 2nd failure opens the breaker), the third finds it open: no
    # provider left, the gate closes at T0; probes at +0.5, +1.5, +3.5 s; the end at +5 s.
    probes_s = sorted({t for t, is_open, _ in a.calls if not is_open})
    assert probes_s == [T0_S + 0.5, T0_S + 1.5, T0_S + 3.5]
    assert ended_s == [T0_S + 5.0] * 3
    for i, run in enumerate(runs):
        with pytest.raises(RetriesExhausted) as caught:
            run.result()
        assert isinstance(caught.value.last, OutageTooLong)
        assert "longer than max_outage_s (5 s)" in str(caught.value.last)
        assert "flow f" in str(caught.value.last)
        assert caught.value.attempts == calls_of([a], f"late {i}")
    assert not task.gate.is_open  # still down: the next event probes or waits again


async def test_a_provider_answering_only_429_backs_off_and_ends_at_max_outage_s() -> None:
    clock = ManualClock(T0_S)

    def limited(_now_s: float, _request: ChatRequest) -> Exception | None:
        return RetriableRemoteError("HTTP 429", stage="ai", status=429, retry_after_s=0.0)

    a = Provider("a", clock, limited)
    task = task_for(clock, [a], max_outage_s=5.0)
    run = asyncio.create_task(task.run(event("limited")))
    await clock.run(run.done)
    with pytest.raises(RetriesExhausted) as caught:
        run.result()
    assert isinstance(caught.value.last, OutageTooLong)
    assert "rate limited (429)" in str(caught.value.last)
    # Retry-After 0 yet no spinning: 0.5, 1, 2, 2 s between the calls once limited again.
    began = [t for t, _, _ in a.calls]
    assert [round(b - a_, 6) for a_, b in itertools.pairwise(began)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert caught.value.attempts == len(began) == 6
