"""The per-event work of an AI task done once: the answer cache's key hashed once per request
(looked up before the call, written after it), the event dumped for the prompt only when a
template reads it (issue 16)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from agents.ai.breaker import CircuitBreaker
from agents.ai.budget import RateBudget
from agents.ai.provider import ChatRequest, Completion
from agents.ai.task import AITask, ProviderRuntime
from schemas.config import WorkerSettings
from schemas.config_ai import AITaskConfig, ProviderConfig
from schemas.config_flows import FlowConfig, MatchConfig
from schemas.events import CloudEvent, EnrichedEvent, TokenUsage
from tests.support.dumps import count_event_dumps

OUTPUT = {"type": "object", "properties": {"sentiment": {"type": "string"}}}


class Client:
    def __init__(self) -> None:
        self.provider = ProviderConfig(name="p", base_url="http://x/v1", model="m")
        self.requests: list[ChatRequest] = []

    async def complete(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        usage = TokenUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
        return Completion('{"sentiment": "positive"}', request.model, usage, 1.0)


class EmptyCache:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def get(self, key: str) -> Any:
        self.asked.append(key)
        return None


def task(prompt: str, client: Client) -> AITask:
    flow = FlowConfig(
        name="f",
        match=MatchConfig(source="s"),
        ai=AITaskConfig(provider="p", prompt=prompt, output=OUTPUT),
    )
    runtime = ProviderRuntime(
        client.provider,
        client,
        RateBudget(client.provider.budget),
        CircuitBreaker("p", client.provider.breaker),
    )
    return AITask(flow, {"p": runtime}, WorkerSettings(retry_backoff_s=0, retry_backoff_max_s=0))


def enriched() -> EnrichedEvent:
    cloud = CloudEvent(
        id="1",
        source="s",
        type="ticket.created",
        time=datetime.now(UTC),
        data={"text": "hi"},
        partitionkey="k",
        traceid="x",
    )
    return EnrichedEvent(flow="f", event=cloud)


async def test_the_cache_key_looked_up_is_the_one_written_and_hashed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed: list[bytes] = []
    real = hashlib.sha256

    def counting_sha256(data: bytes) -> Any:
        hashed.append(data)
        return real(data)

    monkeypatch.setattr(hashlib, "sha256", counting_sha256)  # the provider module's too
    ai, cache, event = task("{{ data.text }}", Client()), EmptyCache(), enriched()
    requests = ai.requests_for(event)
    assert ai.cached(event, cache, requests) is None
    outcome = await ai.run(event, requests)
    assert outcome.cache_key == cache.asked[0]
    assert len(hashed) == 1
    fresh = ChatRequest(
        **{n: getattr(requests[0], n) for n in ("model", "system", "prompt")},
        schema_name=requests[0].schema_name,
        schema=requests[0].schema,
        temperature=requests[0].temperature,
        max_tokens=requests[0].max_tokens,
    )
    assert fresh.cache_key("p") == outcome.cache_key  # the same key as before the memo
    assert fresh.cache_key("other") != outcome.cache_key


def test_the_event_is_dumped_only_for_a_template_that_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dumped = count_event_dumps(monkeypatch)
    event = enriched()
    assert task("Text: {{ data.text }}", Client()).request_for(event).prompt == "Text: hi"
    assert dumped == []
    reading = task("{{ event.type }}: {{ data.text }}", Client())
    assert reading.request_for(event).prompt == "ticket.created: hi"
    assert dumped == ["1"]
