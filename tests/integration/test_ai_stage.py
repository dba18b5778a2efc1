"""The AI stage as a real worker process on the real broker, the AI simulator as its providers.

One worker for the module; the tests change the simulator's faults at runtime. The breaker
test runs last: it leaves the primary provider's breaker open.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agents.stages.ai import ADMIT_PER_CALL
from schemas.events import AIResult, DeadLetter
from tests.support.ai_stack import enriched, metric, produce, scrape, write_config
from tests.support.broker import free_port
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
N = 8


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("ai-stage")
    port = free_port()
    async with running_stack(
        kafka_bootstrap,
        workdir,
        config_path=write_config(workdir),
        roles=("worker",),
        extra_env={"HOOKSTREAM_METRICS_PORT": str(port), "HOOKSTREAM_TEST_N": str(N)},
        ai_knobs={"latency_ms": 20, "jitter_ms": 15},
    ) as running:
        running.env["METRICS_URL"] = f"http://127.0.0.1:{port}/metrics"
        yield running


def results_for(records: list[Record], ids: set[str]) -> list[AIResult]:
    results = [AIResult.model_validate(r.json()) for r in records]
    return [r for r in results if r.event.id in ids]


async def wait_results(stack: Stack, ids: set[str], timeout_s: float = 120) -> list[AIResult]:
    def done(records: list[Record]) -> bool:
        return {r.event.id for r in results_for(records, ids)} >= ids

    records = await wait_for_records(
        stack.bootstrap, stack.topic("results"), done, timeout_s=timeout_s
    )
    return results_for(records, ids)


async def test_key_order_holds_under_concurrency_and_results_record_usage_and_cost(
    stack: Stack,
) -> None:
    await stack.ai.reset()
    run = uuid.uuid4().hex[:6]
    records = [
        enriched(f"cus-{k}", f"Order {run} key {k} number {i}: the export is great.")
        for i in range(20)
        for k in range(8)
    ]
    await produce(stack.bootstrap, stack.topic("enriched"), records)
    ids = {r.event.id for r in records}
    await wait_results(stack, ids)
    # Read back in partition/offset order: per key, the order the AI stage produced them.
    produced = results_for(await read_all(stack.bootstrap, stack.topic("results")), ids)
    by_key: dict[str, list[int]] = defaultdict(list)
    for result in produced:
        by_key[result.event.partitionkey].append(int(result.event.data["message"].split()[5][:-1]))
    assert len(produced) == len(records)
    assert all(seqs == sorted(seqs) for seqs in by_key.values()), by_key
    stats = await stack.ai.stats()
    assert 2 <= stats["max_in_flight"] <= N  # concurrent across keys, bounded per flow
    for result in produced:
        assert (result.provider, result.model, result.attempts) == ("primary", "sim-1", 1)
        assert not result.cached
        assert not result.fallback
        assert result.usage.prompt_tokens > 0
        assert result.usage.completion_tokens > 0
        expected = (result.usage.prompt_tokens * 150 + result.usage.completion_tokens * 600) / 1e6
        assert result.cost_usd == pytest.approx(expected)
        assert result.latency_ms > 0
    samples = await scrape(stack.env["METRICS_URL"])
    assert metric(samples, "hookstream_ai_calls_total", provider="primary", outcome="ok") >= 160
    assert metric(samples, "hookstream_ai_cost_usd_total", provider="primary") > 0
    assert metric(samples, "hookstream_ai_tokens_total", kind="completion") > 0
    seen = metric(samples, "hookstream_runner_max_in_flight_seen", agent="hookstream.ai")
    assert seen <= ADMIT_PER_CALL * N


async def test_429_with_retry_after_and_500_are_retried(stack: Stack) -> None:
    await stack.ai.reset()
    await stack.ai.configure(rate_429=0.2, rate_500=0.1, retry_after_s=1, seed=7)
    try:
        run = uuid.uuid4().hex[:6]
        records = [enriched(f"cus-{i % 5}", f"Retry {run} case {i}.") for i in range(30)]
        await produce(stack.bootstrap, stack.topic("enriched"), records)
        results = await wait_results(stack, {r.event.id for r in records})
    finally:
        await stack.ai.configure(rate_429=0.0, rate_500=0.0)
    assert len({r.event.id for r in results}) == 30
    assert any(r.attempts > 1 for r in results)
    stats = await stack.ai.stats()
    assert stats["by_status"].get("429", 0) > 0
    assert stats["by_status"].get("500", 0) > 0
    # After a 429 with Retry-After: 1, the same request waits at least that long.
    calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in stats["calls"]:
        # Per model: when the primary is exhausted, the fallback is asked at once.
        calls[call["user_text_sha256"] + call["model"]].append(call)
    gaps = [
        datetime.fromisoformat(later["received_at"]) - datetime.fromisoformat(call["received_at"])
        for sequence in calls.values()
        for call, later in itertools.pairwise(sequence)
        if call["status"] == 429
    ]
    assert gaps
    assert all(gap.total_seconds() >= 0.95 for gap in gaps), sorted(gaps)[:3]
    samples = await scrape(stack.env["METRICS_URL"])
    assert metric(samples, "hookstream_ai_429_total", provider="primary") > 0
    assert metric(samples, "hookstream_ai_retries_total", provider="primary") > 0


async def test_invalid_output_is_reasked_once_then_dead_lettered_with_its_errors(
    stack: Stack,
) -> None:
    await stack.ai.reset()
    await stack.ai.configure(rate_malformed=1.0)
    try:
        record = enriched("cus-bad", f"Malformed {uuid.uuid4().hex}.")
        await produce(stack.bootstrap, stack.topic("enriched"), [record])

        def dead(records: list[Record]) -> bool:
            return any(r.json()["event"]["id"] == record.event.id for r in records)

        letters = await wait_for_records(stack.bootstrap, stack.topic("dlq"), dead, timeout_s=90)
    finally:
        await stack.ai.configure(rate_malformed=0.0)
    raw = next(r for r in letters if r.json()["event"]["id"] == record.event.id)
    letter = DeadLetter.from_headers(list(raw.headers.items()), raw.json())
    assert (letter.stage, letter.error_class, letter.attempts) == ("ai", "InvalidModelOutput", 2)
    assert "still invalid after one re-ask" in letter.error_message
    assert b"not JSON" in raw.headers["hookstream-dlq-validation_errors"]
    calls = await stack.ai.calls_for(record.event.data["message"])
    assert [call["reask"] for call in calls] == [False, True]


async def test_an_identical_request_is_answered_from_the_cache(stack: Stack) -> None:
    await stack.ai.reset()
    text = f"Cache me {uuid.uuid4().hex}, the billing page is great."
    first, second = enriched("cus-c1", text), enriched("cus-c2", text)
    await produce(stack.bootstrap, stack.topic("enriched"), [first])
    [answer] = await wait_results(stack, {first.event.id})
    await produce(stack.bootstrap, stack.topic("enriched"), [second])
    [cached] = await wait_results(stack, {second.event.id})
    assert not answer.cached
    assert cached.cached
    assert cached.output == answer.output
    assert cached.cost_usd == 0.0
    assert len(await stack.ai.calls_for(text)) == 1


async def test_breaker_opens_and_the_fallback_answers(stack: Stack) -> None:
    await stack.ai.reset()
    await stack.ai.configure(down_models=["sim-1"])
    try:
        run = uuid.uuid4().hex[:6]
        records = [enriched(f"cus-{i}", f"Fallback {run} case {i}.") for i in range(24)]
        await produce(stack.bootstrap, stack.topic("enriched"), records)
        results = await wait_results(stack, {r.event.id for r in records})
        stats = await stack.ai.stats()
        samples = await scrape(stack.env["METRICS_URL"])
    finally:
        await stack.ai.configure(down_models=[])
    assert {(r.provider, r.model, r.fallback) for r in results} == {("backup", "sim-claude", True)}
    primary_calls = [c for c in stats["calls"] if c["model"] == "sim-1"]
    assert {c["api"] for c in stats["calls"] if c["model"] == "sim-claude"} == {"anthropic"}
    # Without the breaker: 24 events x 3 attempts on the primary. With it: the calls in flight
    # when it opened (5 failures, at most N concurrent) and nothing after.
    assert len(primary_calls) <= 5 + N, len(primary_calls)
    assert metric(samples, "hookstream_ai_breaker_state", provider="primary") == 2
    assert metric(samples, "hookstream_ai_fallbacks_total", flow="triage") >= 24
    await asyncio.sleep(0)
