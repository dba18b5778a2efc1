"""A stage's output over what its topic accepts (``max.message.bytes``) is dead-lettered, and its
partition goes on: the gateway and a worker of the example config, the enriched and results
topics created first with small limits (as an operator may have).

Before: the worker wrote such a result again and again (the same bytes, refused each time), the
partition's later events waited behind it for good, and each refusal broke the producer's
sequence for the partition (streams/kafka/size_limits.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from schemas.config import KafkaSettings
from streams.kafka.admin import create_topics
from tests.integration.test_pipeline_e2e import feedback
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.sinkstack import run_cli
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
ENRICHED_MAX_BYTES = 6000
RESULTS_MAX_BYTES = 4000
DLQ_MAX_BYTES = 6500  # the enrich stage's input, the event, can be larger


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("too-large")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    await create_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        {
            f"{prefix}.enriched": {"max.message.bytes": str(ENRICHED_MAX_BYTES)},
            f"{prefix}.results": {"max.message.bytes": str(RESULTS_MAX_BYTES)},
            f"{prefix}.dlq": {"max.message.bytes": str(DLQ_MAX_BYTES)},
        },
        partitions=8,  # the example config's
    )
    async with running_stack(
        kafka_bootstrap, workdir, roles=("gateway", "worker"), prefix=prefix
    ) as running:
        yield running


async def test_outputs_too_large_for_their_topics_are_dead_lettered_and_the_partition_goes_on(
    stack: Stack,
) -> None:
    customer = "cus_001"  # one key: one partition, in this order
    # ~3.5 KB of text: its enriched record fits 6,000 bytes, its result (the event, the
    # lookup's answer and the model's output) does not fit 4,000.
    result_too_large = feedback(customer, "The export is slow. " * 175)
    # ~7 KB: its enriched record does not fit 6,000 bytes.
    enriched_too_large = feedback(customer, "The invoice is wrong. " * 320)
    small = feedback(customer, "Thanks, the export works now.")
    ids: dict[str, str] = {}
    for name, payload in (
        ("result", result_too_large),
        ("enriched", enriched_too_large),
        ("small", small),
    ):
        webhook_id = f"big-{name}-{uuid.uuid4().hex[:8]}"
        status, answer, _ = await stack.post("helpdesk", payload, webhook_id=webhook_id)
        assert status == 202, answer
        ids[name] = webhook_id

    def letters_for(records: list[Record]) -> dict[str, Record]:
        found = {}
        for record in records:
            if record.headers.get("hookstream-dlq-value_omitted"):
                found["enriched"] = record  # the one too large for the DLQ too
                continue
            event_id = record.json().get("id") or record.json()["event"]["id"]
            for name, webhook_id in ids.items():
                if event_id == webhook_id:
                    found[name] = record
        return found

    # The small event, behind both on the same partition, gets its result.
    results = await wait_for_records(
        stack.bootstrap,
        stack.topic("results"),
        lambda records: any(r.json()["event"]["id"] == ids["small"] for r in records),
        timeout_s=90,
    )
    assert {r.json()["event"]["id"] for r in results} == {ids["small"]}
    letters = letters_for(
        await wait_for_records(
            stack.bootstrap,
            stack.topic("dlq"),
            lambda records: {"result", "enriched"} <= set(letters_for(records)),
            timeout_s=60,
        )
    )
    result_letter, enriched_letter = letters["result"], letters["enriched"]
    assert result_letter.headers["hookstream-dlq-stage"] == b"ai"
    assert result_letter.headers["hookstream-dlq-error_class"] == b"RecordTooLarge"
    reason = result_letter.headers["hookstream-dlq-error_message"].decode()
    assert stack.topic("results") in reason
    assert f"max.message.bytes is {RESULTS_MAX_BYTES}" in reason
    assert result_letter.headers["hookstream-flow"] == b"feedback-triage"
    assert enriched_letter.headers["hookstream-dlq-stage"] == b"enrich"
    assert enriched_letter.headers["hookstream-dlq-error_class"] == b"RecordTooLarge"
    reason = enriched_letter.headers["hookstream-dlq-error_message"].decode()
    assert stack.topic("enriched") in reason
    assert f"max.message.bytes is {ENRICHED_MAX_BYTES}" in reason
    # The event itself is over the DLQ's limit: its letter has no value, and says why.
    assert enriched_letter.value == b""
    omitted = enriched_letter.headers["hookstream-dlq-value_omitted"].decode()
    assert stack.topic("dlq") in omitted
    assert f"max.message.bytes is {DLQ_MAX_BYTES}" in omitted
    # The model was paid once for the result it could not write, never for the event that
    # was not enriched; each dead letter is there once.
    calls = (await stack.ai.stats())["calls"]
    texts = [call["user_text_sha256"] for call in calls]
    assert len(texts) == 2, calls
    dead = [
        r
        for r in await read_all(stack.bootstrap, stack.topic("dlq"))
        if r.headers.get("hookstream-dlq-error_class") == b"RecordTooLarge"
    ]
    assert len(dead) == 2
    # Its redrive reads the original where the stage read it, and sends it back whole.
    config = ["-c", str(stack.config_path)]
    code, out, err = await run_cli("dlq", "redrive", *config, "--stage", "enrich", env=stack.env)
    assert code == 0, (out, err)
    originals = {r.json()["id"]: r for r in await read_all(stack.bootstrap, stack.topic("events"))}
    redriven = [
        r
        for r in await read_all(stack.bootstrap, stack.topic("events"))
        if "hookstream-redriven" in r.headers
    ]
    assert len(redriven) == 1
    assert redriven[0].value == originals[ids["enriched"]].value
    assert redriven[0].json()["data"]["message"] == enriched_too_large["message"]
