"""The AI stage's step loop, its writes replaced: the steps are asked in order, the later one
with the earlier answer in its prompt; every step's answer goes to the answer cache; and a
step answer journaled before a restart is taken from the journal, not asked again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import agents.stages.ai
from agents.ai.provider import ChatRequest
from agents.ai.task import AITask, TaskOutcome
from agents.resources import Resources
from agents.stages.ai import AIStage
from agents.state.answers import AnswerJournal, step_key
from agents.state.recovery import done_key
from schemas.codec import dumps
from schemas.config_loader import load_config
from schemas.errors import InvalidModelOutput
from schemas.events import AIResult, EnrichedEvent
from tests.unit.agents.stages.test_ai_stage_order import Event, Message, offline_resources, ticket
from tests.unit.schemas.test_config_loader import EXAMPLE_ENV
from tests.unit.schemas.test_config_steps import EXAMPLE

CONFIG = load_config(EXAMPLE, env=EXAMPLE_ENV)
ANSWERS = {
    "ticket-reply.classify": {"sentiment": "negative", "category": "bug", "summary": "broken"},
    "ticket-reply.draft": {"reply": "sorry"},
}


class Recorded:
    """What the stage sent: each task's prompt, and its writes."""

    def __init__(self) -> None:
        self.prompts: list[tuple[str, str]] = []
        self.results: list[AIResult] = []
        self.cached: list[str] = []
        self.marks: list[str] = []


def _stage(monkeypatch: pytest.MonkeyPatch, resources: Resources) -> tuple[AIStage, Recorded]:
    recorded = Recorded()

    async def run(self: AITask, enriched: EnrichedEvent, requests: list[ChatRequest]) -> Any:
        recorded.prompts.append((self.flow.name, requests[0].prompt))
        result = AIResult(
            flow=self.flow.name,
            event=enriched.event,
            provider="default",
            model="sim-1",
            output=ANSWERS[self.flow.name],
            latency_ms=1.0,
            attempts=1,
        )
        return TaskOutcome(result, f"cache/{self.flow.name}")

    async def emit(writer: Any, topic: str, value: bytes, **kwargs: Any) -> None:
        recorded.results.append(AIResult.model_validate_json(value))

    async def put_all(writer: Any, entries: list[tuple[Any, str, Any]]) -> None:
        """The stage's map writes (done marks and cache entries), told apart by their map."""
        for target, key, _ in entries:
            (recorded.cached if target is resources.ai_cache else recorded.marks).append(key)

    monkeypatch.setattr(AITask, "run", run)
    monkeypatch.setattr(agents.stages.ai, "emit", emit)
    assert resources.ai_cache is not None
    assert resources.dedupe is not None
    monkeypatch.setattr(agents.stages.ai, "put_all", put_all)
    return AIStage(CONFIG, resources), recorded


def _message(event_id: str) -> Event:
    enriched = EnrichedEvent(flow="ticket-reply", event=ticket(event_id, "cus_001"))
    return Event(Message(dumps(enriched)))


async def test_steps_run_in_order_and_each_answer_is_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stage, recorded = _stage(monkeypatch, offline_resources(CONFIG))
    await asyncio.wait_for(stage.handle(_message("wh-1")), 5)
    assert recorded.prompts == [
        ("ticket-reply.classify", "hi"),
        ("ticket-reply.draft", "Draft a reply to this negative bug ticket: broken"),
    ]
    [result] = recorded.results
    assert result.flow == "ticket-reply"
    assert result.output == ANSWERS["ticket-reply.draft"]
    assert result.steps == {
        "classify": ANSWERS["ticket-reply.classify"],
        "draft": {"reply": "sorry"},
    }
    assert result.attempts == 2
    assert sorted(recorded.cached) == ["cache/ticket-reply.classify", "cache/ticket-reply.draft"]
    assert recorded.marks == [done_key("ticket-reply", "helpdesk", "wh-1")]


async def test_a_step_answered_before_a_restart_is_taken_from_the_journal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    marker = done_key("ticket-reply", "helpdesk", "wh-2")
    before = AnswerJournal(tmp_path, max_age_s=3600)
    before.open()
    paid = AIResult(
        flow="ticket-reply.classify",
        event=ticket("wh-2", "cus_001"),
        provider="default",
        model="sim-1",
        output={"sentiment": "positive", "category": "billing", "summary": "thanks"},
        latency_ms=1.0,
        attempts=1,
        cost_usd=0.5,
    )
    before.record(step_key(marker, "classify"), dumps(paid), None)
    before.close()  # the worker dies here, between the two steps

    resources = offline_resources(CONFIG)
    resources.answers = AnswerJournal(tmp_path, max_age_s=3600)
    resources.answers.open()
    stage, recorded = _stage(monkeypatch, resources)
    await asyncio.wait_for(stage.handle(_message("wh-2")), 5)
    # Only the draft step is asked, with the journaled answer in its prompt.
    assert recorded.prompts == [
        ("ticket-reply.draft", "Draft a reply to this positive billing ticket: thanks")
    ]
    [result] = recorded.results
    assert result.steps["classify"] == paid.output
    assert result.cost_usd == 0.5  # the journaled step's cost stays in the event's
    assert result.attempts == 2
    # Done: neither the step's answer nor the result is kept for another restart.
    assert resources.answers.recovered == {}
    resources.answers.close()
    again = AnswerJournal(tmp_path, max_age_s=3600)
    again.open()
    assert again.recovered == {}
    again.close()


async def test_a_dead_lettered_event_leaves_no_step_answer_in_the_journal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    resources = offline_resources(CONFIG)
    resources.answers = AnswerJournal(tmp_path, max_age_s=3600)
    resources.answers.open()
    stage, recorded = _stage(monkeypatch, resources)
    failing = AITask.run

    async def run(self: AITask, enriched: EnrichedEvent, requests: list[ChatRequest]) -> Any:
        if self.flow.name == "ticket-reply.draft":
            raise InvalidModelOutput("still invalid after one re-ask", stage="ai")
        return await failing(self, enriched, requests)

    dead: list[str] = []

    async def fail(message: Any, exc: Exception, *, extra_headers: Any) -> None:
        dead.append(type(exc).__name__)

    monkeypatch.setattr(AITask, "run", run)
    monkeypatch.setattr(stage, "_fail", fail)
    await asyncio.wait_for(stage.handle(_message("wh-3")), 5)
    assert dead == ["InvalidModelOutput"]
    assert [name for name, _ in recorded.prompts] == ["ticket-reply.classify"]
    resources.answers.close()
    after = AnswerJournal(tmp_path, max_age_s=3600)
    after.open()
    assert after.recovered == {}  # classify's answer was journaled, then noted done
    after.close()
