"""The AI stage writes an event's "done" mark only after its result is on Kafka.

Written together, a crash between the two could leave the mark without the result: the
restarted worker would skip the event and it would never get a result (found by the SIGKILL
integration test, which catches it only sometimes; this test catches it every time).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

import agents.stages.ai
from agents.ai.task import AITask, TaskOutcome
from agents.resources import Resources
from agents.stages.ai import AIStage
from schemas.codec import dumps
from schemas.config import HookstreamConfig
from schemas.config_loader import load_config
from schemas.errors import InvalidModelOutput
from schemas.events import AIResult, CloudEvent, EnrichedEvent
from tests.support.stack import EXAMPLE_CONFIG, SECRETS


@dataclass
class Message:
    value: bytes
    topic: str = "t.enriched"
    partition: int = 0
    offset: int = 7
    key: bytes = b"cus_001"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Event:
    message: Message


def ticket(event_id: str, customer: str) -> CloudEvent:
    return CloudEvent.model_validate(
        {
            "id": event_id,
            "source": "helpdesk",
            "type": "ticket.created",
            "time": "2026-11-29T12:00:00Z",
            "data": {"message": "hi"},
            "partitionkey": customer,
            "traceid": "t",
        }
    )


def offline_resources(config: HookstreamConfig) -> Resources:
    """Resources whose writer and session are never used (the tests replace what writes)."""
    resources = Resources(config, client_id="test", state=True)
    resources._writer = object()  # type: ignore[assignment]
    resources._session = object()  # type: ignore[assignment]
    return resources


async def test_done_mark_waits_for_the_result_write(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(EXAMPLE_CONFIG, env=SECRETS)
    resources = offline_resources(config)
    assert resources.dedupe is not None
    event = ticket("wh-1", "cus_001")
    enriched = EnrichedEvent(flow="feedback-triage", event=event)
    result = AIResult(
        flow="feedback-triage",
        event=event,
        provider="default",
        model="m",
        output={"sentiment": "neutral", "category": "other", "summary": "hi"},
        latency_ms=1.0,
        attempts=1,
    )

    async def run(self: AITask, *_: Any) -> TaskOutcome:
        return TaskOutcome(result, None)

    order: list[str] = []
    result_write_may_finish = asyncio.Event()

    async def slow_emit(writer: Any, topic: str, value: bytes, **kwargs: Any) -> None:
        order.append(f"start {topic}")
        await result_write_may_finish.wait()
        order.append(f"acked {topic}")

    async def put_all(writer: Any, entries: list[tuple[Any, str, Any]]) -> None:
        order.extend(f"mark {key}" for _, key, _ in entries)

    monkeypatch.setattr(AITask, "run", run)
    monkeypatch.setattr(agents.stages.ai, "emit", slow_emit)
    monkeypatch.setattr(agents.stages.ai, "put_all", put_all)
    stage = AIStage(config, resources)
    handling = asyncio.create_task(stage.handle(Event(Message(dumps(enriched)))))
    for _ in range(100):
        await asyncio.sleep(0)
    assert order == [f"start {stage.topics.results}"]  # no mark while the result is unacked
    result_write_may_finish.set()
    await asyncio.wait_for(handling, 5)
    assert order[1] == f"acked {stage.topics.results}"
    assert order[2].startswith("mark done/feedback-triage/helpdesk/wh-1")


async def test_a_failed_call_gives_its_slot_back_before_dead_lettering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The DLQ write waits for Kafka; the call slot it would hold bounds model calls."""
    config = load_config(EXAMPLE_CONFIG, env=SECRETS)
    resources = offline_resources(config)
    event = ticket("wh-2", "cus_002")
    enriched = EnrichedEvent(flow="feedback-triage", event=event)

    async def run(self: AITask, *_: Any) -> TaskOutcome:
        raise InvalidModelOutput("the answer is not JSON", stage="ai")

    slots_free_at_dead_letter: list[bool] = []
    dead_lettered: list[str] = []

    async def fail(message: Any, exc: Exception, *, extra_headers: Any) -> None:
        slots_free_at_dead_letter.append(not stage._limits[("feedback-triage", None)].locked())
        dead_lettered.append(type(exc).__name__)

    monkeypatch.setattr(AITask, "run", run)
    stage = AIStage(config, resources)
    monkeypatch.setattr(stage, "_fail", fail)
    limit = stage._limits[("feedback-triage", None)]
    # Every slot but one is busy: the failed call's slot is the last one.
    for _ in range(config.flow("feedback-triage").max_concurrency - 1):
        await limit.acquire()
    assert not limit.locked()
    await asyncio.wait_for(stage.handle(Event(Message(dumps(enriched)))), 5)
    assert dead_lettered == ["InvalidModelOutput"]
    assert slots_free_at_dead_letter == [True]


async def test_a_prompt_the_event_cannot_fill_is_dead_lettered_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A TemplateError is permanent: before, it escaped handle and the runner retried it
    for ever, holding the partition."""
    config = load_config(EXAMPLE_CONFIG, env=SECRETS)
    resources = offline_resources(config)
    event = ticket("wh-3", "cus_003").model_copy(update={"data": {"customer_id": "cus_003"}})
    enriched = EnrichedEvent(flow="feedback-triage", event=event)
    called: list[str] = []
    dead_lettered: list[str] = []

    async def run(self: AITask, *_: Any) -> TaskOutcome:
        called.append("run")
        raise AssertionError("no model call for an event the prompt cannot be built from")

    async def fail(message: Any, exc: Exception, *, extra_headers: Any) -> None:
        dead_lettered.append(f"{type(exc).__name__}: {exc}")

    monkeypatch.setattr(AITask, "run", run)
    stage = AIStage(config, resources)
    monkeypatch.setattr(stage, "_fail", fail)
    await asyncio.wait_for(stage.handle(Event(Message(dumps(enriched)))), 5)
    assert called == []
    assert len(dead_lettered) == 1
    assert dead_lettered[0].startswith("TemplateError: the event has no field 'data.message'")
