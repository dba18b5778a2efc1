"""What the AI stage makes of a multi-step flow's answers and of a flow with no AI step, and
the journal keys of step answers."""

from __future__ import annotations

from typing import Any

from agents.stages.ai import combined, transformed
from agents.state.answers import marker_of, step_key
from schemas.config_loader import load_config
from schemas.events import AIResult, CloudEvent, EnrichedEvent, TokenUsage
from tests.unit.schemas.test_config_loader import EXAMPLE_ENV
from tests.unit.schemas.test_config_steps import EXAMPLE

CONFIG = load_config(EXAMPLE, env=EXAMPLE_ENV)


def _event(source: str, data: dict[str, Any]) -> EnrichedEvent:
    event = CloudEvent.model_validate(
        {
            "id": "e1",
            "source": source,
            "type": "payment.failed" if source == "payments" else "ticket.created",
            "time": "2026-11-29T12:00:00Z",
            "data": data,
            "partitionkey": "cus_1",
            "traceid": "t",
        }
    )
    return EnrichedEvent(flow="f", event=event)


def _step(output: dict[str, object], tokens: int, *, cost_usd: float, cached: bool) -> AIResult:
    enriched = _event("helpdesk", {"message": "m"})
    return AIResult(
        flow="ticket-reply.x",
        event=enriched.event,
        provider="default",
        model=f"sim-{tokens}",
        output=output,
        usage=TokenUsage(prompt_tokens=tokens, completion_tokens=1, total_tokens=tokens + 1),
        latency_ms=10.0,
        attempts=1 if not cached else 0,
        cached=cached,
        cost_usd=cost_usd,
    )


def test_a_multi_step_result_is_the_last_answer_with_every_step_and_the_sums() -> None:
    flow = CONFIG.flow("ticket-reply")
    enriched = _event("helpdesk", {"message": "m"})
    first = _step({"category": "bug"}, 100, cost_usd=0.5, cached=False)
    last = _step({"reply": "sorry"}, 20, cost_usd=0.25, cached=True)
    result = combined(flow, enriched, {"classify": first, "draft": last})
    assert result.flow == "ticket-reply"
    assert result.output == {"reply": "sorry"}
    assert result.steps == {"classify": {"category": "bug"}, "draft": {"reply": "sorry"}}
    assert result.model == "sim-20"  # the last step's
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (120, 2)
    assert result.usage.total_tokens == 122
    assert (result.attempts, result.cost_usd, result.latency_ms) == (1, 0.75, 20.0)
    assert not result.cached  # one step paid


def test_a_flow_with_no_ai_step_renders_its_output_keeping_json_types() -> None:
    flow = CONFIG.flow("payment-sync")
    data = {"data": {"customer": "cus_1", "amount": 4900, "currency": "eur"}}
    result = transformed(flow, _event("payments", data))
    assert result.output == {"event": "payment.failed", "amount": 4900, "currency": "EUR"}
    assert (result.attempts, result.provider, result.model, result.steps) == (0, "", "", {})


def test_a_step_key_belongs_to_its_events_marker() -> None:
    marker = "done/ticket-reply/helpdesk/e1"
    key = step_key(marker, "classify")
    assert key != marker
    assert marker_of(key) == marker
    assert marker_of(marker) == marker
