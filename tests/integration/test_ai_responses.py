"""OpenAI's Responses API against the AI simulator (a real HTTP server in its own process):
the protocol of background mode, and the client's rule that one request is one paid response.

The client records each response id in a map before it waits; here the map is in memory
(:class:`tests.support.ai_stack.MemoryMap`), the Kafka side is tested with a killed worker in
``test_ai_responses_kill``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from agents.ai.provider import ChatRequest
from agents.ai.responses import RESPONSE_IDS, OpenAIResponses, ResponseIds
from schemas.config_ai import ProviderConfig
from schemas.errors import PermanentRemoteError, RetriableRemoteError
from tests.support.ai_stack import MemoryMap
from tests.support.sims import AISimHandle, running_ai_sim
from tests.support.sinkstack import wait_until

SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string"}, "summary": {"type": "string"}},
}
REQUEST = ChatRequest(
    model="sim-1",
    system="Classify the ticket.",
    prompt="The refund never arrived and I am angry.",
    schema_name="triage",
    schema=SCHEMA,
    temperature=0.0,
    max_tokens=64,
)


@pytest.fixture
async def ai() -> AsyncIterator[AISimHandle]:
    async with running_ai_sim(latency_ms=50) as handle:
        yield handle


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def client(ai: AISimHandle, session: aiohttp.ClientSession, **options: Any) -> OpenAIResponses:
    provider = ProviderConfig(
        name="openai",
        base_url=ai.base_url,
        model="sim-1",
        api="responses",
        background_poll_s=0.02,
        background_poll_max_s=0.1,
        **options,
    )
    return OpenAIResponses(provider, session)


async def responses(ai: AISimHandle) -> dict[str, Any]:
    stats: dict[str, Any] = (await ai.stats())["responses"]
    return stats


async def test_a_background_response_is_created_recorded_polled_and_read(
    ai: AISimHandle, session: aiohttp.ClientSession
) -> None:
    ids = ResponseIds("done/triage/helpdesk/ev-1", MemoryMap(), writer=None)
    RESPONSE_IDS.set(ids)
    completion = await client(ai, session, background=True).complete(REQUEST)
    assert completion.content == (
        '{"sentiment":"negative","summary":"The refund never arrived and I am angry."}'
    )
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    stats = await responses(ai)
    assert stats["paid"] == 1
    assert stats["background"] == 1
    assert stats["retrieved"] >= 1  # polled: the POST answered while it was queued
    assert stats["by_status"]["completed"] == 1
    (recorded,) = ids.store.data.values()  # type: ignore[attr-defined]
    assert recorded["id"].startswith("resp_")

    # Whoever redoes the event finds the id: the answer is read again, not paid again.
    again = await client(ai, session, background=True).complete(REQUEST)
    assert again.content == completion.content
    assert (await responses(ai))["paid"] == 1
    # A re-ask is a request of its own: a new response.
    await client(ai, session, background=True).complete(REQUEST.reask("{}", "summary missing"))
    assert (await responses(ai))["paid"] == 2


async def test_an_expired_id_is_replaced_by_a_new_response(
    ai: AISimHandle, session: aiohttp.ClientSession
) -> None:
    ids = ResponseIds("done/triage/helpdesk/ev-2", MemoryMap(), writer=None)
    RESPONSE_IDS.set(ids)
    await ai.request_json("POST", "/_sim/responses/config", json={"ttl_s": 0.2})
    await client(ai, session, background=True).complete(REQUEST)
    (first,) = [v["id"] for v in ids.store.data.values()]  # type: ignore[attr-defined]

    async with session.get(f"{ai.base_url}/responses/{first}") as found:
        assert found.status == 200

    async def expired() -> bool:
        return not (await responses(ai))["by_status"]["completed"]

    await wait_until(expired, poll_s=0.05)  # its TTL is over
    async with session.get(f"{ai.base_url}/responses/{first}") as gone:
        assert gone.status == 404
        body = await gone.json()
        assert body["error"]["message"] == f"Response with id '{first}' not found."

    await client(ai, session, background=True).complete(REQUEST)
    (second,) = [v["id"] for v in ids.store.data.values()]  # type: ignore[attr-defined]
    assert second != first  # re-recorded under the same key
    assert (await responses(ai))["paid"] == 2


async def test_a_failed_response_is_retried_as_a_new_one(
    ai: AISimHandle, session: aiohttp.ClientSession
) -> None:
    ids = ResponseIds("done/triage/helpdesk/ev-3", MemoryMap(), writer=None)
    RESPONSE_IDS.set(ids)
    await ai.configure(rate_500=1.0)
    with pytest.raises(RetriableRemoteError, match=r"response resp_\w+ failed \(server_error"):
        await client(ai, session, background=True).complete(REQUEST)
    stats = await responses(ai)
    assert stats["paid"] == 1
    assert stats["by_status"]["failed"] == 1
    await ai.configure(rate_500=0.0)
    await client(ai, session, background=True).complete(REQUEST)  # the failed one replaced
    stats = await responses(ai)
    assert stats["paid"] == 2
    assert stats["by_status"]["completed"] == 1


async def test_a_response_held_past_background_timeout_s_is_cancelled(
    ai: AISimHandle, session: aiohttp.ClientSession
) -> None:
    RESPONSE_IDS.set(ResponseIds("done/triage/helpdesk/ev-4", MemoryMap(), writer=None))
    await ai.request_json("POST", "/_sim/responses/config", json={"hold": True})
    with pytest.raises(
        RetriableRemoteError, match=r"after background_timeout_s \(0.3 s\); cancelled"
    ):
        await client(ai, session, background=True, background_timeout_s=0.3).complete(REQUEST)
    stats = await responses(ai)
    assert stats["cancelled"] == 1
    assert stats["by_status"]["cancelled"] == 1


class _BusyAtPut(MemoryMap):
    """Records whether the writing task was marked busy when the id was written."""

    def __init__(self, calling: set[asyncio.Task[Any]]) -> None:
        super().__init__()
        self.calling = calling
        self.busy_at_put: list[bool] = []

    async def put(self, writer: Any, key: str, value: Any) -> None:
        self.busy_at_put.append(asyncio.current_task() in self.calling)
        await super().put(writer, key, value)


async def test_a_create_is_busy_and_a_poll_of_a_recorded_id_is_not(
    ai: AISimHandle, session: aiohttp.ClientSession
) -> None:
    """What a stop or a rebalance may let go of (agents.stages.ai.AIStage.busy): the create
    and the write of its id, never; the polls after it, and a recorded id polled again, yes."""
    await ai.request_json("POST", "/_sim/responses/config", json={"hold": True})
    calling: set[asyncio.Task[Any]] = set()
    store = _BusyAtPut(calling)

    async def call() -> None:
        RESPONSE_IDS.set(ResponseIds("done/triage/helpdesk/ev-5", store, None, calling))
        calling.add(asyncio.current_task())  # type: ignore[arg-type] # as AITask._call does
        await client(ai, session, background=True).complete(REQUEST)

    for _ in range(2):  # created, then (another owner) its recorded id polled again
        before = int((await responses(ai))["retrieved"])
        task = asyncio.create_task(call())

        async def polled(since: int = before, running: asyncio.Task[None] = task) -> bool:
            return running.done() or int((await responses(ai))["retrieved"]) >= since + 2

        await wait_until(polled, poll_s=0.02)
        assert not task.done()  # held: it polls
        assert task not in calling  # only polling: releasable
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert store.busy_at_put == [True]  # one response, its id written while busy
    assert (await responses(ai))["paid"] == 1


async def test_synchronous_responses_and_the_simulator_s_refusals(
    ai: AISimHandle, session: aiohttp.ClientSession
) -> None:
    sync = client(ai, session)
    completion = await sync.complete(REQUEST)
    assert '"sentiment":"negative"' in completion.content
    stats = await responses(ai)
    assert stats["paid"] == 1
    assert stats["background"] == 0
    (call,) = await ai.calls_for(REQUEST.prompt)
    assert call["status"] == 200
    assert call["api"] == "openai"

    body = {"model": "sim-1", "input": "hello"}
    async with session.post(f"{ai.base_url}/responses", json=body) as created:
        response_id = (await created.json())["id"]
    async with session.post(f"{ai.base_url}/responses/{response_id}/cancel") as refused:
        assert refused.status == 400  # only background responses can be cancelled
        assert "background=true" in (await refused.json())["error"]["message"]
    async with session.get(f"{ai.base_url}/responses/resp_unknown") as missing:
        assert missing.status == 404

    await ai.configure(rate_500=1.0)
    with pytest.raises(RetriableRemoteError):
        await sync.complete(REQUEST)
    await ai.configure(rate_500=0.0)
    bad = client(ai, session, structured_output="json_schema")
    with pytest.raises(PermanentRemoteError, match="HTTP 400"):
        await bad.complete(dataclasses.replace(REQUEST, max_tokens=8))
