"""A provider outage pauses the AI stage instead of dead-lettering (issue 17, "Outage means
pause"): a real worker on the real broker, the AI simulator as both providers, its faults
changed at runtime.

Flows (one worker for the module, records produced straight to the enriched topic):
``triage`` falls back from ``primary`` (model sim-1) to ``backup`` (sim-claude); ``solo`` and
``brief`` (``max_outage_s: 3``) use only ``primary``; ``other`` only ``backup``. ``down_models``
takes one model down; ``rate_500: 1`` takes both.

Figures (dead letters, results per event, calls during the outage) are printed with ``-s``.
``make test`` runs a 20 s outage (still spanning the 20 s of sending) and a 5,000-event storm;
the figures in the docs are from ``HOOKSTREAM_TEST_OUTAGE_S=60
HOOKSTREAM_TEST_STORM_EVENTS=10000`` (a minute and a half more).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from schemas.codec import dumps
from schemas.events import AIResult, DeadLetter, EnrichedEvent
from streams.kafka.connection import client_kwargs
from tests.support.ai_stack import AI_CONFIG, enriched, metric, produce, scrape
from tests.support.broker import free_port
from tests.support.kafka import Record, read_all, settings_of, wait_for_records
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
N = 8
# How long the outage lasts and how many events the 429/500 storm sends (see the docstring).
OUTAGE_S = float(os.environ.get("HOOKSTREAM_TEST_OUTAGE_S", "20"))
STORM_EVENTS = int(os.environ.get("HOOKSTREAM_TEST_STORM_EVENTS", "5000"))
FLOWS = """
  - name: solo
    match: {source: helpdesk, types: ["solo.*"]}
    ai:
      provider: primary
      prompt: "{{ data.message }}"
      output: {type: object, properties: {summary: {type: string}}, required: [summary]}
      max_concurrency: 2
  - name: other
    match: {source: helpdesk, types: ["other.*"]}
    ai:
      provider: backup
      prompt: "{{ data.message }}"
      output: {type: object, properties: {summary: {type: string}}, required: [summary]}
      max_concurrency: 2
  - name: brief
    match: {source: helpdesk, types: ["brief.*"]}
    ai:
      provider: primary
      prompt: "{{ data.message }}"
      output: {type: object, properties: {summary: {type: string}}, required: [summary]}
      max_concurrency: 2
      max_outage_s: 3
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("ai-outage")
    config_path = workdir / "ai-outage.yaml"
    config_path.write_text(AI_CONFIG.rstrip("\n") + "\n" + FLOWS)
    port = free_port()
    async with running_stack(
        kafka_bootstrap,
        workdir,
        config_path=config_path,
        roles=("worker",),
        extra_env={"HOOKSTREAM_METRICS_PORT": str(port), "HOOKSTREAM_TEST_N": str(N)},
        ai_knobs={"latency_ms": 20, "jitter_ms": 15},
    ) as running:
        running.env["METRICS_URL"] = f"http://127.0.0.1:{port}/metrics"
        yield running


def for_flow(flow: str, customer: str, message: str) -> EnrichedEvent:
    return enriched(customer, message).model_copy(update={"flow": flow})


def by_id(records: list[Record], ids: set[str]) -> Counter[str]:
    """How many records of ``records`` (results or dead letters) each of ``ids`` has."""
    found = (r.json()["event"]["id"] for r in records)
    return Counter(event_id for event_id in found if event_id in ids)


async def wait_results(stack: Stack, ids: set[str], timeout_s: float) -> list[Record]:
    return await wait_for_records(
        stack.bootstrap,
        stack.topic("results"),
        lambda records: set(by_id(records, ids)) >= ids,
        timeout_s=timeout_s,
        poll_s=1.0,
    )


async def wait_settled(stack: Stack, ids: set[str], timeout_s: float) -> None:
    """Until each of ``ids`` has a result or a dead letter: a dead letter fails the test's
    assertions at once instead of leaving it waiting for a result that will not come."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        results, letters = await outcomes(stack, ids)
        if set(results) | set(letters) >= ids:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{len(ids - set(results) - set(letters))} events still open")
        await asyncio.sleep(1.0)


async def wait_metric(
    stack: Stack, name: str, holds: Callable[[float], bool], timeout_s: float = 60, **labels: str
) -> float:
    """Poll /metrics until ``holds(value)``: the sentinel the tests wait on, not a sleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = metric(await scrape(stack.env["METRICS_URL"]), name, **labels)
        if holds(value):
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"{name}{labels} is still {value}")
        await asyncio.sleep(0.2)


async def outcomes(stack: Stack, ids: set[str]) -> tuple[Counter[str], Counter[str]]:
    """(results per event, dead letters per event) as they are on Kafka now."""
    results = by_id(await read_all(stack.bootstrap, stack.topic("results")), ids)
    letters = by_id(await read_all(stack.bootstrap, stack.topic("dlq")), ids)
    return results, letters


async def test_a_long_outage_under_load_dead_letters_nothing(stack: Stack) -> None:
    """2,000 events at 100/s; every model call answers 500 from the 2nd second for OUTAGE_S."""
    await stack.ai.reset()
    run = uuid.uuid4().hex[:6]
    records = [enriched(f"cus-{i % 64}", f"Outage {run} case {i}.") for i in range(2000)]
    ids = {r.event.id for r in records}
    probes_before = metric(await scrape(stack.env["METRICS_URL"]), "hookstream_ai_probes_total")
    producer = AIOKafkaProducer(
        **client_kwargs(settings_of(stack.bootstrap)), acks="all", enable_idempotence=True
    )
    await producer.start()
    loop = asyncio.get_running_loop()
    outage: dict[str, float] = {}

    async def send_at_100_per_s() -> None:
        started = loop.time()
        for second in range(20):
            if second == 2:
                await stack.ai.configure(rate_500=1.0)
                outage["start"] = loop.time()
            for record in records[second * 100 : (second + 1) * 100]:
                await producer.send(
                    stack.topic("enriched"), dumps(record), key=record.event.partitionkey.encode()
                )
            await producer.flush()
            await asyncio.sleep(max(0.0, started + second + 1 - loop.time()))

    try:
        await send_at_100_per_s()
    finally:
        await producer.stop()
    await wait_metric(stack, "hookstream_ai_flow_paused", lambda v: v == 1, flow="triage")
    # The outage lasts OUTAGE_S from its start: the fault itself, not a wait for an outcome.
    await asyncio.sleep(max(0.0, outage["start"] + OUTAGE_S - loop.time()))
    during = await stack.ai.stats()
    await stack.ai.configure(rate_500=0.0)
    await wait_settled(stack, ids, timeout_s=240)
    results, letters = await outcomes(stack, ids)
    samples = await scrape(stack.env["METRICS_URL"])
    probes = metric(samples, "hookstream_ai_probes_total") - probes_before
    failed_calls = during["by_status"].get("500", 0)
    print(
        f"\n{OUTAGE_S:.0f} s outage, 2,000 events at 100/s: {sum(letters.values())} dead letters, "
        f"results per event {sorted(set(results.values()))}, {failed_calls} calls answered "
        f"500 during the outage, {probes:.0f} probes"
    )
    assert sum(letters.values()) == 0
    assert set(results) == ids
    assert set(results.values()) == {1}
    assert metric(samples, "hookstream_ai_flow_paused", flow="triage") == 0
    assert probes >= 1
    # Without the pause every event would have spent its attempts (2,000 x 6 calls at most):
    # here the calls of the events in flight when it began, then one probe walk per backoff.
    assert failed_calls < 400, failed_calls


async def test_a_storm_of_10_percent_429_and_10_percent_500_dead_letters_nothing(
    stack: Stack,
) -> None:
    await stack.ai.reset()
    await stack.ai.configure(rate_429=0.1, rate_500=0.1, retry_after_s=0, seed=17)
    try:
        run = uuid.uuid4().hex[:6]
        records = [enriched(f"cus-{i % 97}", f"Storm {run} case {i}.") for i in range(STORM_EVENTS)]
        ids = {r.event.id for r in records}
        await produce(stack.bootstrap, stack.topic("enriched"), records)
        await wait_settled(stack, ids, timeout_s=250)
        stats = await stack.ai.stats()
    finally:
        await stack.ai.configure(rate_429=0.0, rate_500=0.0, retry_after_s=1)
    results, letters = await outcomes(stack, ids)
    answered = await read_all(stack.bootstrap, stack.topic("results"))
    mine = [AIResult.model_validate(r.json()) for r in answered]
    mine = [r for r in mine if r.event.id in ids]
    print(
        f"\n{STORM_EVENTS:,} events, 10% 429 + 10% 500: {sum(letters.values())} dead letters, "
        f"results per event {sorted(set(results.values()))}, "
        f"429s {stats['by_status'].get('429', 0)}, 500s {stats['by_status'].get('500', 0)}"
    )
    assert sum(letters.values()) == 0
    assert set(results) == ids
    assert set(results.values()) == {1}
    assert stats["by_status"].get("429", 0) > 500
    # A 429 is no attempt: some events made more than max_attempts (3) calls on the primary
    # and were still answered by it, not handed to the fallback.
    assert any(r.attempts > 3 and not r.fallback for r in mine)


async def test_another_flow_keeps_going_while_one_is_paused(stack: Stack) -> None:
    await stack.ai.reset()
    await stack.ai.configure(down_models=["sim-1"])
    run = uuid.uuid4().hex[:6]
    try:
        # Eight events, solo's whole share of the runner (4 x max_concurrency 2).
        paused = [for_flow("solo", f"cus-s{i}", f"Solo {run} {i}.") for i in range(8)]
        paused_ids = {r.event.id for r in paused}
        await produce(stack.bootstrap, stack.topic("enriched"), paused)
        await wait_metric(stack, "hookstream_ai_flow_paused", lambda v: v == 1, flow="solo")
        going = [for_flow("other", f"cus-o{i}", f"Other {run} {i}.") for i in range(40)]
        going_ids = {r.event.id for r in going}
        await produce(stack.bootstrap, stack.topic("enriched"), going)
        await wait_results(stack, going_ids, timeout_s=60)
        samples = await scrape(stack.env["METRICS_URL"])
        results, letters = await outcomes(stack, paused_ids)
        assert metric(samples, "hookstream_ai_flow_paused", flow="solo") == 1
        assert (results, letters) == (Counter(), Counter())  # solo's events wait
    finally:
        await stack.ai.configure(down_models=[])
    await wait_results(stack, paused_ids, timeout_s=60)
    results, letters = await outcomes(stack, paused_ids | going_ids)
    assert set(results) == paused_ids | going_ids
    assert set(results.values()) == {1}
    assert sum(letters.values()) == 0


async def test_an_outage_longer_than_max_outage_s_is_dead_lettered(stack: Stack) -> None:
    await stack.ai.reset()
    await stack.ai.configure(down_models=["sim-1"])
    run = uuid.uuid4().hex[:6]
    try:
        records = [for_flow("brief", f"cus-b{i}", f"Brief {run} {i}.") for i in range(3)]
        ids = {r.event.id for r in records}
        await produce(stack.bootstrap, stack.topic("enriched"), records)
        dlq = await wait_for_records(
            stack.bootstrap,
            stack.topic("dlq"),
            lambda found: set(by_id(found, ids)) >= ids,
            timeout_s=60,
        )
        calls = {
            r.event.id: len(await stack.ai.calls_for(r.event.data["message"])) for r in records
        }
    finally:
        await stack.ai.configure(down_models=[])
    letters = [
        DeadLetter.from_headers(list(r.headers.items()), r.json())
        for r in dlq
        if r.json()["event"]["id"] in ids
    ]
    assert len(letters) == 3
    for letter in letters:
        assert (letter.stage, letter.error_class) == ("ai", "OutageTooLong")
        assert "longer than max_outage_s (3 s)" in letter.error_message
        assert "flow brief" in letter.error_message
        assert letter.attempts == calls[letter.original["event"]["id"]]
    results, _ = await outcomes(stack, ids)
    assert results == Counter()
