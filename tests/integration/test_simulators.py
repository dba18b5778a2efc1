"""The simulators as the pipeline meets them: separate processes behind real HTTP sockets.

Timing assertions are lower bounds only (the simulated latency must be at least what was asked);
nothing here asserts that the machine is fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from tests.support.sims import SimulatorError, running_ai_sim, running_crm_sim

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "category": {"type": "string", "enum": ["billing", "bug", "feature_request", "other"]},
        "summary": {"type": "string"},
        "urgent": {"type": "boolean"},
    },
    "required": ["sentiment", "category", "summary", "urgent"],
    "additionalProperties": False,
}
COMPLAINT = "The export is broken and I want a refund. Nothing works since Monday."


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # limit=0: the concurrency test opens a thousand connections at once
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


def chat_body(text: str = COMPLAINT, *, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "max_tokens": 200,
        "messages": [
            {"role": "system", "content": "Triage this message. I love JSON."},
            {"role": "user", "content": text},
        ],
    }
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "triage", "schema": schema, "strict": True},
        }
    return body


async def post_chat(
    http: aiohttp.ClientSession, base_url: str, body: Any, **kwargs: Any
) -> tuple[int, dict[str, str], Any]:
    async with http.post(f"{base_url}/chat/completions", json=body, **kwargs) as response:
        return response.status, dict(response.headers), await response.json()


# --- AI simulator ----------------------------------------------------------------------------


async def test_completion_with_json_schema_is_parseable_and_fits_the_schema(
    http: aiohttp.ClientSession,
) -> None:
    async with running_ai_sim() as sim:
        assert sim.base_url == sim.root_url + "/v1"
        status, _, body = await post_chat(http, sim.base_url, chat_body(schema=SCHEMA))
        assert status == 200
        assert body["object"] == "chat.completion"
        assert body["model"] == "gpt-4o-mini"
        assert body["id"].startswith("chatcmpl-")
        choice = body["choices"][0]
        assert choice["index"] == 0
        assert choice["finish_reason"] == "stop"
        assert choice["message"]["role"] == "assistant"
        answer = json.loads(choice["message"]["content"])
        assert answer == {
            "sentiment": "negative",  # the system message's "love" is not analysed
            "category": "billing",
            "summary": "The export is broken and I want a refund.",
            "urgent": False,
        }
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0

        _, _, again = await post_chat(http, sim.base_url, chat_body(schema=SCHEMA))
        assert again["id"] == body["id"]
        assert again["choices"] == body["choices"]
        assert again["usage"] == body["usage"]


async def test_completion_without_schema_answers_the_four_fields(
    http: aiohttp.ClientSession,
) -> None:
    async with running_ai_sim() as sim:
        status, _, body = await post_chat(http, sim.base_url, chat_body("Thanks, I love it!"))
        assert status == 200
        answer = json.loads(body["choices"][0]["message"]["content"])
        assert answer == {
            "sentiment": "positive",
            "category": "other",
            "summary": "Thanks, I love it!",
            "score": 1.0,
        }


async def test_rate_429_answers_429_with_retry_after(http: aiohttp.ClientSession) -> None:
    async with running_ai_sim(rate_429=1.0, retry_after_s=7) as sim:
        status, headers, body = await post_chat(http, sim.base_url, chat_body())
        assert status == 429
        assert headers["Retry-After"] == "7"
        assert headers["x-ratelimit-reset-requests"] == "7s"
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert (await sim.stats())["by_status"] == {"429": 1}


async def test_rate_500_answers_500_with_an_error_body(http: aiohttp.ClientSession) -> None:
    async with running_ai_sim() as sim:
        await sim.configure(rate_500=1.0)
        status, _, body = await post_chat(http, sim.base_url, chat_body())
        assert status == 500
        assert body["error"]["type"] == "server_error"


async def test_rate_malformed_answers_200_with_content_that_is_not_json(
    http: aiohttp.ClientSession,
) -> None:
    async with running_ai_sim(rate_malformed=1.0) as sim:
        status, _, body = await post_chat(http, sim.base_url, chat_body(schema=SCHEMA))
        assert status == 200
        content = body["choices"][0]["message"]["content"]
        with pytest.raises(json.JSONDecodeError):
            json.loads(content)
        stats = await sim.stats()
        assert stats["malformed"] == 1
        assert stats["by_status"] == {"200": 1}


async def test_faults_follow_the_seed_and_restart_on_reset(http: aiohttp.ClientSession) -> None:
    async def statuses(base_url: str) -> list[int]:
        return [(await post_chat(http, base_url, chat_body()))[0] for _ in range(30)]

    async with running_ai_sim(rate_429=0.3, rate_500=0.3, seed=42) as sim:
        first = await statuses(sim.base_url)
        assert {200, 429, 500} <= set(first)
        await sim.reset()
        assert await statuses(sim.base_url) == first
        await sim.configure(seed=43)
        assert await statuses(sim.base_url) != first


async def test_bearer_auth_is_enforced(http: aiohttp.ClientSession) -> None:
    async with running_ai_sim(api_key="sk-test-123") as sim:
        status, _, body = await post_chat(http, sim.base_url, chat_body())
        assert status == 401
        assert body["error"]["code"] == "invalid_api_key"
        wrong = {"Authorization": "Bearer sk-wrong"}
        assert (await post_chat(http, sim.base_url, chat_body(), headers=wrong))[0] == 401
        right = {"Authorization": f"Bearer {sim.api_key}"}
        assert (await post_chat(http, sim.base_url, chat_body(), headers=right))[0] == 200
        async with http.get(f"{sim.base_url}/models") as response:
            assert response.status == 401
        async with http.get(f"{sim.base_url}/models", headers=right) as response:
            assert [m["id"] for m in (await response.json())["data"]] == ["sim-1"]
        assert (await sim.stats())["by_status"] == {"401": 2, "200": 1}


async def test_latency_applies_to_answers_and_errors(http: aiohttp.ClientSession) -> None:
    async with running_ai_sim(latency_ms=250) as sim:
        started = time.monotonic()
        assert (await post_chat(http, sim.base_url, chat_body()))[0] == 200
        assert time.monotonic() - started >= 0.25

        await sim.configure(latency_ms=150, jitter_ms=50, rate_429=1.0)
        started = time.monotonic()
        assert (await post_chat(http, sim.base_url, chat_body()))[0] == 429
        assert time.monotonic() - started >= 0.1


async def test_invalid_requests_are_400_and_config_is_validated(
    http: aiohttp.ClientSession,
) -> None:
    async with running_ai_sim() as sim:
        url = f"{sim.base_url}/chat/completions"
        async with http.post(url, data=b"{not json") as response:
            assert response.status == 400
            assert (await response.json())["error"]["type"] == "invalid_request_error"
        status, _, body = await post_chat(http, sim.base_url, {"model": "m"})
        assert status == 400
        assert body["error"]["code"] == "invalid_messages"

        before = await sim.config()
        for bad in ({"rate_429": 1.5}, {"colour": "red"}, {"latency_ms": "5"}):
            with pytest.raises(SimulatorError, match="400"):
                await sim.configure(**bad)
        assert await sim.config() == before


async def test_stats_record_each_call_by_user_text_and_reset(http: aiohttp.ClientSession) -> None:
    async with running_ai_sim() as sim:
        for text in ("one", "two", "one"):
            await post_chat(http, sim.base_url, chat_body(text))
        stats = await sim.stats()
        assert stats["requests"] == 3
        assert [c["seq"] for c in stats["calls"]] == [1, 2, 3]
        one = hashlib.sha256(b"one").hexdigest()
        assert [c["user_text_sha256"] for c in stats["calls"]].count(one) == 2
        assert len(await sim.calls_for("two")) == 1
        call = stats["calls"][0]
        assert call["model"] == "gpt-4o-mini"
        assert call["status"] == 200
        assert datetime.fromisoformat(call["received_at"]).tzinfo is not None

        cleared = await sim.reset()
        assert cleared["requests"] == 0
        assert cleared["calls"] == []


def _allow_open_files(wanted: int) -> int:
    """Raise this process's soft fd limit (the simulator inherits it); returns what is allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


async def test_many_slow_requests_are_in_flight_at_once_and_sigterm_stops_cleanly(
    http: aiohttp.ClientSession,
) -> None:
    # a thousand sockets on each side, plus the interpreter's own files
    concurrent = min(1000, _allow_open_files(4096) - 200)
    async with running_ai_sim(latency_ms=60_000) as sim:
        tasks = [
            asyncio.create_task(post_chat(http, sim.base_url, chat_body(f"msg {i}")))
            for i in range(concurrent)
        ]
        try:
            deadline = time.monotonic() + 120  # a hang guard, not a speed requirement
            while (stats := await sim.stats())["in_flight"] < concurrent:
                finished = [t for t in tasks if t.done()]
                assert not finished, finished[0]
                assert time.monotonic() < deadline, stats["in_flight"]
                await asyncio.sleep(0.1)
            assert stats["max_in_flight"] == concurrent
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    # the launcher sent SIGTERM while a thousand handlers slept: the server still exits 0
    assert sim.returncode == 0


async def test_start_failure_raises_with_the_simulators_stderr() -> None:
    with pytest.raises(SimulatorError, match="must not exceed 1"):
        async with running_ai_sim(rate_429=0.9, rate_500=0.9):
            pass


# --- CRM simulator ---------------------------------------------------------------------------


async def test_crm_serves_seeded_customers_and_404s(http: aiohttp.ClientSession) -> None:
    async with running_crm_sim(seed_customers=3) as crm:
        async with http.get(f"{crm.base_url}/customers/cus_001") as response:
            assert response.status == 200
            first = await response.json()
        assert first["id"] == "cus_001"
        assert {"name", "email", "plan", "company"} <= set(first)
        assert await crm.customer("cus_003") is not None
        async with http.get(f"{crm.base_url}/customers/cus_004") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "customer_not_found"
    async with running_crm_sim(seed_customers=3) as again:
        assert await again.customer("cus_001") == first  # deterministic seed data


async def test_crm_put_patch_notes_and_update_log(http: aiohttp.ClientSession) -> None:
    async with running_crm_sim() as crm:
        url = f"{crm.base_url}/customers"
        key = {"Idempotency-Key": "evt-1:crm"}
        async with http.put(f"{url}/cus_001", json={"tier": "gold"}, headers=key) as response:
            assert response.status == 200
            record = await response.json()
        assert record["tier"] == "gold"
        assert record["name"]  # merged, not replaced
        async with http.put(f"{url}/cus_new", json={"name": "New Co"}) as response:
            assert response.status == 200  # created
        async with http.patch(f"{url}/cus_001", json={"tier": "platinum"}) as response:
            assert response.status == 200
        async with http.post(f"{url}/cus_001/notes", json={"text": "called"}) as response:
            assert response.status == 201
        async with http.post(f"{url}/cus_nobody/notes", json={"text": "x"}) as response:
            assert response.status == 404

        customer = await crm.customer("cus_001")
        assert customer is not None
        assert customer["tier"] == "platinum"
        assert customer["notes"][-1]["text"] == "called"
        assert (await crm.customer("cus_new") or {})["name"] == "New Co"

        updates = await crm.updates()
        assert [(u["seq"], u["method"], u["customer_id"]) for u in updates] == [
            (1, "PUT", "cus_001"),
            (2, "PUT", "cus_new"),
            (3, "PATCH", "cus_001"),
            (4, "POST", "cus_001"),
        ]
        assert updates[0]["idempotency_key"] == "evt-1:crm"
        assert updates[0]["body"] == {"tier": "gold"}
        assert updates[0]["path"] == "/customers/cus_001"
        assert updates[1]["idempotency_key"] is None
        assert updates[3]["path"] == "/customers/cus_001/notes"
        assert datetime.fromisoformat(updates[0]["received_at"]).tzinfo is not None

        # polling: after= returns only what is new, customer_id= filters
        assert [u["seq"] for u in await crm.updates(after=2)] == [3, 4]
        assert await crm.updates(after=4) == []
        async with http.put(f"{url}/cus_002", json={"x": 1}) as response:
            assert response.status == 200
        assert [u["seq"] for u in await crm.wait_for_updates(1, after=4)] == [5]
        assert [u["seq"] for u in await crm.updates(customer_id="cus_new")] == [2]

        await crm.clear_updates()
        assert await crm.updates() == []
        async with http.put(f"{url}/cus_002", json={"x": 2}) as response:
            assert response.status == 200
        assert [u["seq"] for u in await crm.updates()] == [1]


async def test_crm_rejects_bad_bodies_without_recording(http: aiohttp.ClientSession) -> None:
    async with running_crm_sim() as crm:
        url = f"{crm.base_url}/customers/cus_001"
        async with http.put(url, data=b"not json") as response:
            assert response.status == 400
        async with http.put(url, json=["a", "list"]) as response:
            assert response.status == 422
        async with http.patch(url, json="text") as response:
            assert response.status == 422
        assert await crm.updates() == []


async def test_crm_fail_status_answers_every_customer_route_with_retry_after(
    http: aiohttp.ClientSession,
) -> None:
    async with running_crm_sim(retry_after_s=4) as crm:
        await crm.configure(fail_status=503)
        url = f"{crm.base_url}/customers/cus_001"
        for method in ("GET", "PUT", "PATCH"):
            async with http.request(method, url, json={"a": 1}) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "4"
        async with http.post(f"{url}/notes", json={"text": "x"}) as response:
            assert response.status == 503
        async with http.get(f"{crm.base_url}/healthz") as response:
            assert response.status == 200  # control routes stay up
        assert await crm.updates() == []
        assert (await crm.stats())["by_status"] == {"503": 4}

        await crm.configure(fail_status=None)
        async with http.put(url, json={"a": 1}) as response:
            assert response.status == 200
        assert len(await crm.updates()) == 1


async def test_crm_rate_500_latency_and_auth(http: aiohttp.ClientSession) -> None:
    async with running_crm_sim(api_key="crm-key", latency_ms=200) as crm:
        url = f"{crm.base_url}/customers/cus_001"
        async with http.get(url) as response:
            assert response.status == 401
        auth = {"Authorization": "Bearer crm-key"}
        started = time.monotonic()
        async with http.get(url, headers=auth) as response:
            assert response.status == 200
        assert time.monotonic() - started >= 0.2
        await crm.configure(rate_500=1.0, latency_ms=0)
        async with http.get(url, headers=auth) as response:
            assert response.status == 500
        with pytest.raises(SimulatorError, match="400"):
            await crm.configure(fail_status=200)
