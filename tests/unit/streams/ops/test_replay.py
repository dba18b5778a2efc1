"""Replay: which records a filter selects on each topic, and the model-cost estimate."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition

from schemas.config import HookstreamConfig
from schemas.config_ai import PricingConfig
from schemas.config_loader import load_config
from schemas.events import EnrichedEvent
from streams.cli.replay_cost import ReplayPricer
from streams.kafka.reader import Window
from streams.ops.replay import (
    FlowEstimate,
    ModelEstimate,
    Original,
    Priced,
    Replayer,
    ReplayFilter,
    ReplayStats,
    sample_windows,
)
from tests.unit.schemas.test_config_loader import EXAMPLE, EXAMPLE_ENV
from tests.unit.schemas.test_config_steps import EXAMPLE as STEPS_EXAMPLE

TICKET = {
    "id": "w1",
    "source": "helpdesk",
    "type": "ticket.created",
    "data": {"customer_id": "cus_1", "message": "The export is slow."},
}
PAYMENT = {
    "id": "p1",
    "source": "payments",
    "type": "payment.failed",
    "data": {"data": {"customer": "cus_2", "description": "Card declined"}},
}


@pytest.fixture(scope="module")
def config() -> HookstreamConfig:
    return load_config(EXAMPLE, env=EXAMPLE_ENV)


def _replayer(config: HookstreamConfig, role: str, **selection: str) -> Replayer:
    return Replayer(
        config, f"hookstream.{role}", start=0, end=None, selection=ReplayFilter(**selection)
    )


def _wrapped(flow: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"flow": flow, "event": event, "enrichment": {"customer": {"plan": "pro"}}}


def test_an_empty_filter_selects_everything(config: HookstreamConfig) -> None:
    assert ReplayFilter().empty
    assert not ReplayFilter(source="x").empty
    replayer = _replayer(config, "events")
    assert replayer.selects(TICKET)
    assert replayer.selects({})


@pytest.mark.parametrize(
    ("selection", "ticket", "payment"),
    [
        ({"source": "helpdesk"}, True, False),
        ({"source": "payments"}, False, True),
        ({"type": "ticket.created"}, True, False),
        ({"type": "ticket.closed"}, False, False),
        ({"flow": "feedback-triage"}, True, False),
        ({"flow": "payment-followup"}, False, True),
        ({"flow": "no-such-flow"}, False, False),
        ({"source": "helpdesk", "flow": "payment-followup"}, False, False),
        ({"source": "payments", "type": "payment.failed"}, False, True),
    ],
)
def test_filters_on_every_topic(
    config: HookstreamConfig, selection: dict[str, str], ticket: bool, payment: bool
) -> None:
    # On the events topic the value is the CloudEvent; --flow means "that flow matches it".
    events = _replayer(config, "events", **selection)
    assert (events.selects(TICKET), events.selects(PAYMENT)) == (ticket, payment)
    # On enriched and results the value names its flow and wraps the event.
    for role in ("enriched", "results"):
        replayer = _replayer(config, role, **selection)
        wrapped_ticket = _wrapped("feedback-triage", TICKET)
        wrapped_payment = _wrapped("payment-followup", PAYMENT)
        assert (replayer.selects(wrapped_ticket), replayer.selects(wrapped_payment)) == (
            ticket,
            payment,
        )


def test_only_events_and_enriched_reach_the_model(config: HookstreamConfig) -> None:
    assert _replayer(config, "events").calls_model
    assert _replayer(config, "enriched").calls_model
    assert not _replayer(config, "results").calls_model
    assert not _replayer(config, "dlq").calls_model
    other = Replayer(config, "elsewhere.events", start=None, end=None)
    assert other.role == ""
    assert not other.calls_model


def test_each_replay_has_its_own_id(config: HookstreamConfig) -> None:
    first, second = _replayer(config, "events"), _replayer(config, "events")
    assert first.replay_id != second.replay_id
    assert len(first.replay_id) == 12
    given = Replayer(config, "hookstream.events", start=0, end=None, replay_id="r-1")
    assert given.replay_id == "r-1"


def _pricer(config: HookstreamConfig, prices: dict[str, Any]) -> ReplayPricer:
    """The CLI's pricer on a config whose provider has ``prices`` (no Kafka: the cache is
    filled by hand)."""
    provider = config.providers[0].model_copy(
        update={"prices": {m: PricingConfig(**p) for m, p in prices.items()}}
    )
    return ReplayPricer(config.model_copy(update={"providers": [provider]}))


def test_the_pricer_answers_from_the_cache_or_prices_a_call(config: HookstreamConfig) -> None:
    model = config.providers[0].model
    pricer = _pricer(config, {model: {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 10.0}})
    triage = config.flows[0]
    ai = triage.ai
    assert ai is not None
    ticket = {**TICKET, "time": "2026-01-01T00:00:00Z", "partitionkey": "c", "traceid": "t"}
    enriched = _wrapped(triage.name, ticket)

    # Not cached, no earlier result: prompt characters / 4 + 1, and max_tokens.
    call = pricer.price(triage, "enriched", enriched, None)
    assert call.outcome == "call"
    assert not call.from_usage
    prompt = (len(ai.system) + len("The export is slow.")) // 4 + 1
    assert (call.prompt_tokens, call.completion_tokens) == (prompt, ai.max_tokens)
    assert call.cost_usd == pytest.approx((prompt * 2.0 + ai.max_tokens * 10.0) / 1e6)

    # An earlier result's usage replaces the estimate.
    original = Original(enrichment={}, model=model, prompt_tokens=100, completion_tokens=20)
    used = pricer.price(triage, "events", ticket, original)
    assert (used.outcome, used.from_usage) == ("call", True)
    assert used.cost_usd == pytest.approx((100 * 2.0 + 20 * 10.0) / 1e6)

    # In the cache under the AI stage's own key: answered from it, for free.
    task = pricer.tasks[(triage.name, None)]
    request = task.request_for(EnrichedEvent.model_validate(enriched))
    entry = {"provider": "default", "model": model, "output": {}, "usage": {}}
    pricer.cache.remember(request.cache_key(config.providers[0].name), entry)
    assert pricer.price(triage, "enriched", enriched, None).outcome == "cache"
    # The same event on the events topic has no enrichment: its earlier result's stands in.
    with_enrichment = Original(
        enrichment=enriched["enrichment"], model=model, prompt_tokens=1, completion_tokens=1
    )
    assert pricer.price(triage, "events", ticket, with_enrichment).outcome == "cache"
    assert pricer.price(triage, "events", {"id": "broken"}, None).outcome == "invalid"


def test_a_model_without_a_price_is_flagged(config: HookstreamConfig) -> None:
    pricer = _pricer(config, {})
    triage = config.flows[0]
    ticket = {**TICKET, "time": "2026-01-01T00:00:00Z", "partitionkey": "c", "traceid": "t"}
    priced = pricer.price(triage, "enriched", _wrapped(triage.name, ticket), None)
    assert (priced.cost_usd, priced.has_price) == (0.0, False)


def test_calls_of_one_token_shape_are_priced_alike_but_not_across_models(
    config: HookstreamConfig,
) -> None:
    """The pricer prices a call's shape once (tokens, model answered, whence the tokens):
    two events whose prompts have the same length cost the same, the same usage answered by
    a model without a price costs nothing, and another length costs more."""
    model = config.providers[0].model
    pricer = _pricer(config, {model: {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 10.0}})
    triage = config.flows[0]
    ticket = {**TICKET, "time": "2026-01-01T00:00:00Z", "partitionkey": "c", "traceid": "t"}

    def priced(message: str, original: Original | None = None) -> Priced:
        event = {**ticket, "data": {"customer_id": "cus_1", "message": message}}
        return pricer.price(triage, "events", event, original)

    first, same_length = priced("The export is slow."), priced("The import is slow.")
    assert first == same_length
    assert first.outcome == "call"
    longer = priced("The export is slow. " * 40)
    assert longer.prompt_tokens > first.prompt_tokens
    assert longer.cost_usd > first.cost_usd

    def used(answered: str) -> Original:  # an earlier result: 100 + 20 tokens
        return Original(enrichment={}, model=answered, prompt_tokens=100, completion_tokens=20)

    known, other = priced("x", used(model)), priced("x", used("other-model"))
    assert known.from_usage
    assert other.from_usage
    assert known.has_price
    assert known.cost_usd == pytest.approx((100 * 2.0 + 20 * 10.0) / 1e6)
    # The primary model has a price: the call is priced at it whichever model answered.
    assert other.cost_usd == known.cost_usd
    # Priced only for the model that answered: the same shape, apart per model.
    only_other = _pricer(
        config, {"other-model": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0}}
    )
    unpriced = only_other.price(triage, "events", ticket, used(model))
    assert (unpriced.cost_usd, unpriced.has_price) == (0.0, False)
    answered = only_other.price(triage, "events", ticket, used("other-model"))
    assert answered.has_price
    assert answered.cost_usd == pytest.approx(120 / 1e6)


def test_the_estimate_line_says_what_is_counted_and_estimated() -> None:
    estimate = ModelEstimate(records=5)
    triage = estimate.by_flow.setdefault("triage", FlowEstimate(tasks=4))
    triage.add(Priced("cache"))
    triage.add(Priced("call", 100, 20, 0.25, from_usage=True, batch_cost_usd=0.125))
    triage.add(Priced("unknown", 50, 200, 0.5, has_price=False))
    triage.add(Priced("invalid"))
    other = estimate.by_flow.setdefault("other", FlowEstimate(tasks=1))
    other.add(Priced("call", 10, 200, 1.0, batch_cost_usd=0.5))
    total = estimate.total()
    assert (total.tasks, total.cached, total.calls, total.unknown, total.invalid) == (5, 1, 3, 1, 1)
    assert (total.prompt_tokens, total.completion_tokens) == (160, 420)
    line = estimate.line("hookstream.events")
    assert "5 record(s), 5 AI task(s): 1 from the AI cache, 3 model call(s)" in line
    assert "(triage: 1 cached + 2 call(s), other: 0 cached + 1 call(s))" in line
    assert "estimated cost $1.7500 ($0.6250 with --batch) for ~160 prompt + 420 completion" in line
    assert "tokens of 1 call(s) from their earlier results' usage, 2 estimated" in line
    assert "1 whose cache entry cannot be checked" in line
    assert "1 invalid event(s)" in line
    assert "1 call(s) of a model without a price" in line
    assert "priced (one in" not in line


def test_a_sampled_estimate_is_scaled_to_every_task_and_says_so() -> None:
    # 10 tasks, every 5th priced: one from the cache, one call of 100 + 20 tokens at $0.5.
    estimate = ModelEstimate(records=10, stride=5)
    share = estimate.by_flow.setdefault("triage", FlowEstimate(tasks=10))
    share.add(Priced("cache"))
    share.add(Priced("call", 100, 20, 0.5))
    share.scale()
    assert (share.cached, share.calls, share.prompt_tokens, share.completion_tokens) == (
        5,
        5,
        500,
        100,
    )
    assert share.cost_usd == pytest.approx(2.5)
    line = estimate.line("hookstream.events")
    assert "10 AI task(s): 5 from the AI cache, 5 model call(s)" in line
    assert "2 of the 10 tasks priced (one in 5), the figures scaled to all" in line


def test_a_large_window_is_sampled_in_slices_spread_over_every_partition() -> None:
    """About the asked number of records, in proportion to each partition's share, each
    slice inside its partition's range and the slices in order from its start to its end."""
    a, b, empty = (TopicPartition("t", p) for p in range(3))
    win = Window({a: (1_000, 81_000), b: (0, 20_000), empty: (5, 5)})
    slices = sample_windows(win, 10_000, rounds=10)
    assert len(slices) == 10
    taken = {a: 0, b: 0}
    for index, part in enumerate(slices):
        assert empty not in part.ranges
        for tp, (first, last) in part.ranges.items():
            start, end = win.ranges[tp]
            assert start <= first < last <= end
            assert first == start + index * (end - start) // 10
            taken[tp] += last - first
    assert taken == {a: 8_000, b: 2_000}
    assert sum(part.size for part in slices) == 10_000


def test_an_estimate_from_a_sample_says_so_and_counts_approximately() -> None:
    estimate = ModelEstimate(records=100_000, stride=10, sampled=10_000, window=100_000)
    share = estimate.by_flow.setdefault("triage", FlowEstimate(tasks=100_000))
    for _ in range(10_000):
        share.add(Priced("call", 10, 2, 0.001))
    share.scale()
    assert share.calls == 100_000
    line = estimate.line("hookstream.events")
    assert "~100,000 record(s), ~100,000 AI task(s)" in line
    assert "10,000 tasks priced from a sample of 10,000 of the window's 100,000 records" in line
    assert "priced (one in" not in line


def test_stats_rate() -> None:
    assert ReplayStats("r", replayed=500, elapsed_s=2.0).events_per_s == 250.0
    assert ReplayStats("r").events_per_s == 0.0


def test_the_pricer_counts_a_call_per_step_and_none_for_a_flow_with_no_ai_step() -> None:
    config = load_config(STEPS_EXAMPLE, env=EXAMPLE_ENV)
    pricer = ReplayPricer(config)
    reply, sync = config.flows
    ticket = {**TICKET, "time": "2026-01-01T00:00:00Z", "partitionkey": "c", "traceid": "t"}
    priced = pricer.price(reply, "enriched", _wrapped(reply.name, ticket), None)
    # classify's prompt is known; draft's reads classify's answer, known only once it runs.
    assert [part.outcome for part in priced.parts] == ["call", "unknown"]
    share = FlowEstimate(tasks=1)
    share.add(priced)
    assert (share.calls, share.unknown, share.cached, share.steps) == (2, 1, 0, 2)
    payment = {**PAYMENT, "time": "2026-01-01T00:00:00Z", "partitionkey": "c", "traceid": "t"}
    none = pricer.price(sync, "events", payment, None)
    assert none.outcome == "none"
    share = FlowEstimate(tasks=1)
    share.add(none)
    assert (share.priced, share.calls, share.cached, share.invalid) == (1, 0, 0, 0)
    estimate = ModelEstimate(records=2, by_flow={"ticket-reply": FlowEstimate(tasks=1)})
    estimate.by_flow["ticket-reply"].add(priced)
    estimate.by_flow["payment-sync"] = share
    share.tasks = 1
    line = estimate.line("hookstream.enriched")
    assert (
        "(ticket-reply: 0 cached + 2 call(s) over 2 steps, payment-sync: no AI step, 0 calls)"
        in (line)
    )
