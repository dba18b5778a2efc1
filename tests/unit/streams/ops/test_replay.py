"""Replay: which records a filter selects on each topic, and the model-cost estimate."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.config import HookstreamConfig
from schemas.config_loader import load_config
from streams.ops.replay import ModelEstimate, Replayer, ReplayFilter, ReplayStats
from tests.unit.schemas.test_config_loader import EXAMPLE, EXAMPLE_ENV

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


def test_the_estimate_counts_calls_and_tokens_per_flow(config: HookstreamConfig) -> None:
    events = _replayer(config, "events")
    estimate = ModelEstimate()
    events._estimate_one(TICKET, estimate)
    events._estimate_one(TICKET, estimate)
    events._estimate_one(PAYMENT, estimate)
    events._estimate_one({"source": "unknown", "type": "x"}, estimate)  # matches no flow
    assert estimate.calls == 3
    assert estimate.by_flow == {"feedback-triage": 2, "payment-followup": 1}
    triage, followup = config.flows
    assert estimate.completion_tokens == 2 * triage.ai.max_tokens + followup.ai.max_tokens
    prompt = (len(triage.ai.system) + len("The export is slow.")) // 4 + 1
    assert estimate.prompt_tokens > 2 * prompt  # plus the payment's

    enriched = _replayer(config, "enriched")
    one = ModelEstimate()
    enriched._estimate_one(_wrapped("feedback-triage", TICKET), one)
    assert (one.calls, one.prompt_tokens) == (1, prompt)
    none = ModelEstimate()
    enriched._estimate_one(_wrapped("gone-flow", TICKET), none)
    assert none.calls == 0


def test_stats_rate() -> None:
    assert ReplayStats("r", replayed=500, elapsed_s=2.0).events_per_s == 250.0
    assert ReplayStats("r").events_per_s == 0.0
