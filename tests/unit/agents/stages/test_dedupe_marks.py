"""Enrich's dedupe reads the AI stage's marks (issue 16: enrich writes no mark of its own).

A (flow, event) whose result is done, or which the AI stage dead-lettered, is not enriched
again; the AI stage writes the ``dead`` mark only once its dead letter is acknowledged, and
never reads it, so a redrive of the dead letter is answered.
"""

from __future__ import annotations

from typing import Any

import pytest

import agents.stages.ai
import agents.stages.base
import agents.state.durable_map
from agents.ai.task import AITask, TaskOutcome
from agents.stages.ai import AIStage
from agents.stages.enrich import pending, seen_key
from agents.state.recovery import dead_key, done_key
from schemas.codec import dumps
from schemas.config_loader import load_config
from schemas.errors import InvalidModelOutput
from schemas.events import AIResult, EnrichedEvent
from tests.support.stack import EXAMPLE_CONFIG, SECRETS
from tests.unit.agents.stages.test_ai_stage_order import Event, Message, offline_resources, ticket

FLOW = "feedback-triage"


def test_enrich_leaves_out_the_flows_done_or_dead_lettered_for_the_event() -> None:
    config = load_config(EXAMPLE_CONFIG, env=SECRETS)
    dedupe = offline_resources(config).dedupe
    assert dedupe is not None
    event = ticket("wh-10", "cus_001")
    flows = config.flows_for(event.source, event.type)
    assert [flow.name for flow in flows] == [FLOW]
    assert pending(dedupe, flows, event, None) == flows

    dedupe.remember(done_key(FLOW, "helpdesk", "wh-10"), 1)
    assert pending(dedupe, flows, event, None) == []
    # A replay has marks of its own: the live one does not drop it.
    assert pending(dedupe, flows, event, "r1") == flows

    other = ticket("wh-11", "cus_001")
    dedupe.remember(dead_key(FLOW, "helpdesk", "wh-11"), 1)
    assert pending(dedupe, flows, other, None) == []

    older = ticket("wh-12", "cus_001")  # marked by a worker before issue 16
    dedupe.remember(seen_key(older), 1)
    assert pending(dedupe, flows, older, None) == []
    assert pending(dedupe, flows, ticket("wh-13", "cus_001"), None) == flows


async def test_the_dead_mark_follows_the_dead_letter_and_does_not_stop_a_redrive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = load_config(EXAMPLE_CONFIG, env=SECRETS)
    resources = offline_resources(config)
    dedupe = resources.dedupe
    assert dedupe is not None
    event = ticket("wh-14", "cus_002")
    record = Event(Message(dumps(EnrichedEvent(flow=FLOW, event=event))))
    order: list[str] = []

    async def dead_letter(writer: Any, topic: str, message: Any, **kwargs: Any) -> None:
        order.append(f"dlq {topic}")

    async def emit_all(writer: Any, records: list[Any]) -> None:
        order.extend(f"mark {r.key.decode()}" for r in records)

    async def emit(writer: Any, topic: str, value: bytes, **kwargs: Any) -> None:
        order.append(f"result {topic}")

    async def put_all(writer: Any, entries: list[tuple[Any, str, Any]]) -> None:
        order.extend(f"mark {key}" for _, key, _ in entries)

    async def failing(self: AITask, *_: Any) -> TaskOutcome:
        raise InvalidModelOutput("the answer is not JSON", stage="ai")

    monkeypatch.setattr(agents.stages.base, "dead_letter", dead_letter)
    monkeypatch.setattr(agents.state.durable_map, "emit_all", emit_all)
    monkeypatch.setattr(agents.stages.ai, "emit", emit)
    monkeypatch.setattr(agents.stages.ai, "put_all", put_all)
    monkeypatch.setattr(AITask, "run", failing)
    stage = AIStage(config, resources)
    await stage.handle(record)
    dead = dead_key(FLOW, "helpdesk", "wh-14")
    assert order == [f"dlq {stage.topics.dlq}", f"mark {dead}"]
    assert dead in dedupe

    answer = AIResult(
        flow=FLOW,
        event=event,
        provider="default",
        model="m",
        output={"sentiment": "neutral", "category": "other", "summary": "hi"},
        latency_ms=1.0,
        attempts=1,
    )

    async def answering(self: AITask, *_: Any) -> TaskOutcome:
        return TaskOutcome(answer, None)

    monkeypatch.setattr(AITask, "run", answering)
    order.clear()
    await stage.handle(record)  # the redrive
    done = done_key(FLOW, "helpdesk", "wh-14")
    assert order == [f"result {stage.topics.results}", f"mark {done}"]
