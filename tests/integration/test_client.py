"""The publish/subscribe client and the ``publish``/``tail`` commands, on the real broker with a
real worker: published events come back as results to every subscriber group, once each, and a
subscriber that dies mid-way resumes without skipping a result.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from schemas.config import KafkaSettings
from schemas.errors import RecordTooLarge
from schemas.events import AIResult
from streams.client import Publisher, Subscriber, make_event
from streams.kafka.admin import create_topics
from tests.support.kafka import read_all, wait_for_records
from tests.support.sinkstack import run_cli, wait_until
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
CUSTOMERS = ("cus_001", "cus_002", "cus_003", "cus_004")


class Handled(Exception):
    """Raised by a test's handler to die mid-way, like a crashing service."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("client")
    async with running_stack(kafka_bootstrap, workdir, roles=("worker",)) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def published(stack: Stack) -> list[str]:
    """20 events over four keys, published with the client; their results are on Kafka."""
    events = [
        make_event(
            {
                "event": "ticket.created",
                "customer_id": CUSTOMERS[n % 4],
                "message": f"Client test message {n}: the export is slow.",
            },
            source="helpdesk",
            type="ticket.created",
            key=CUSTOMERS[n % 4],
            id=f"client-{uuid.uuid4().hex}",
        )
        for n in range(20)
    ]
    async with Publisher(bootstrap_servers=stack.bootstrap, topic_prefix=stack.prefix) as pub:
        metadata = await pub.publish_many(events)
    assert [m.topic for m in metadata] == [stack.topic("events")] * 20
    ids = [e.id for e in events]
    await wait_for_records(
        stack.bootstrap,
        stack.topic("results"),
        lambda rs: {r.json()["event"]["id"] for r in rs} >= set(ids),
        timeout_s=120,
    )
    return ids


async def _take(subscriber: Subscriber, count: int, seen: list[AIResult]) -> None:
    async def loop() -> None:
        async for result in subscriber:
            seen.append(result)
            if len(seen) == count:
                break

    await asyncio.wait_for(loop(), 120)


def _subscriber(stack: Stack, group: str) -> Subscriber:
    return Subscriber(bootstrap_servers=stack.bootstrap, topic_prefix=stack.prefix, group_id=group)


async def test_every_subscriber_group_sees_every_result_once(
    stack: Stack, published: list[str]
) -> None:
    for group in ("billing", "analytics"):
        seen: list[AIResult] = []
        async with _subscriber(stack, f"{stack.prefix}-{group}") as subscriber:
            await _take(subscriber, 20, seen)
        assert sorted(r.event.id for r in seen) == sorted(published)
        assert {r.flow for r in seen} == {"feedback-triage"}
        # In order per key: each customer's results arrive in publishing order.
        for customer in CUSTOMERS:
            mine = [r.event.id for r in seen if r.event.partitionkey == customer]
            assert mine == [i for n, i in enumerate(published) if CUSTOMERS[n % 4] == customer]
        # Everything handled was committed on the clean exit: nothing more comes to the group.
        async with _subscriber(stack, f"{stack.prefix}-{group}") as again:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(again.__anext__(), 5)


async def test_a_subscriber_that_dies_mid_way_skips_nothing(
    stack: Stack, published: list[str]
) -> None:
    group = f"{stack.prefix}-crashy"
    first: list[AIResult] = []

    async def crash_while_handling_the_8th() -> None:
        async with _subscriber(stack, group) as subscriber:
            async for result in subscriber:
                if len(first) == 7:
                    raise Handled  # dies while handling the 8th result: it was not handled
                first.append(result)

    with pytest.raises(Handled):
        await asyncio.wait_for(crash_while_handling_the_8th(), 120)
    rest: list[AIResult] = []
    async with _subscriber(stack, group) as subscriber:
        await _take(subscriber, 13, rest)
    handled_first = {r.event.id for r in first}
    handled_rest = [r.event.id for r in rest]
    assert len(handled_first) == 7
    # The restarted subscriber gets exactly what was not handled: nothing skipped, nothing
    # handled twice (the 8th, in flight when it died, comes again).
    assert sorted(handled_rest) == sorted(set(published) - handled_first)


async def test_publish_command_reads_json_lines(stack: Stack) -> None:
    marker = uuid.uuid4().hex[:8]
    lines = [
        {"event": "ticket.created", "customer_id": "cus_005", "message": f"CLI {marker} one"},
        {"event": "ticket.updated", "customer_id": "cus_006", "message": f"CLI {marker} two"},
    ]
    stdin = b"\n".join(orjson.dumps(line) for line in lines) + b"\n\n"
    args = ("publish", "-c", str(stack.config_path), "--source", "helpdesk")
    code, _, err = await run_cli(*args, "-", env=stack.env, stdin=stdin)
    assert code == 0, err
    assert f"published 2 event(s) to {stack.topic('events')}" in err

    def mine(records: list[Any]) -> list[Any]:
        return [r for r in records if marker in r.json()["data"]["message"]]

    events = mine(await read_all(stack.bootstrap, stack.topic("events")))
    assert sorted(e.json()["type"] for e in events) == ["ticket.created", "ticket.updated"]
    assert {e.key for e in events} == {b"cus_005", b"cus_006"}  # the source's partition key
    # And the pipeline took them like any webhook.
    await wait_for_records(
        stack.bootstrap,
        stack.topic("results"),
        lambda rs: len([r for r in rs if marker in r.json()["event"]["data"]["message"]]) == 2,
        timeout_s=120,
    )

    bad = b'{"event": "ticket.created", "customer_id": "cus_005"}\nnot json\n'
    code, _, err = await run_cli(*args, "-", env=stack.env, stdin=bad)
    assert code == 2
    assert "stdin:2: not JSON" in err
    assert len(mine(await read_all(stack.bootstrap, stack.topic("events")))) == 2


def _json_documents(text: str) -> list[Any]:
    decoder, documents, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


async def test_tail_prints_pretty_json_and_follows(stack: Stack, published: list[str]) -> None:
    base = ("tail", "-c", str(stack.config_path))
    code, out, err = await run_cli(
        *base, "results", "--from-beginning", "--max", "3", env=stack.env
    )
    assert code == 0, err
    shown = _json_documents(out)
    assert len(shown) == 3
    assert out.startswith('{\n  "topic"')  # pretty: indented, one key per line
    for record in shown:
        assert record["topic"] == stack.topic("results")
        assert AIResult.model_validate(record["value"]).flow == "feedback-triage"
        assert record["key"] == record["value"]["event"]["partitionkey"]

    # Following: a tail started at the end prints what is written after it started.
    topic = f"{stack.prefix}.tail-{uuid.uuid4().hex[:6]}"
    await create_topics(KafkaSettings(bootstrap_servers=stack.bootstrap), {topic: {}}, partitions=2)
    async with Publisher(bootstrap_servers=stack.bootstrap, topic_prefix=stack.prefix) as pub:
        tail = asyncio.create_task(run_cli(*base, topic, "--max", "1", env=stack.env))
        sent = 0

        async def tail_done() -> bool:
            nonlocal sent
            if not tail.done():
                sent += 1
                await pub._writer.send(topic, orjson.dumps({"n": sent}), key=b"k")
            return tail.done()

        await wait_until(tail_done, timeout_s=120, poll_s=0.5)
    code, out, err = tail.result()
    assert code == 0, err
    (record,) = _json_documents(out)
    assert record["topic"] == topic
    assert 1 <= record["value"]["n"] <= sent
    assert record["headers"] == {}


async def test_publishing_to_a_topic_that_takes_small_batches(kafka_bootstrap: str) -> None:
    # An events topic whose max.message.bytes (4,000) is under a batch of the events below:
    # each is published (smaller batches), in order; one over the limit raises RecordTooLarge
    # and breaks nothing after it. Before, the batch was refused and publish_many raised
    # aiokafka's MessageSizeTooLargeError, or RecordTooLarge for an 872-byte event.
    prefix = f"client-small-{uuid.uuid4().hex[:8]}"
    await create_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        {f"{prefix}.events": {"max.message.bytes": "4000"}},
        partitions=1,
    )
    events = [
        make_event({"n": n, "text": "x" * 600}, source="s", type="t", key="k") for n in range(12)
    ]
    async with Publisher(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix) as publisher:
        written = await publisher.publish_many(events)
        with pytest.raises(RecordTooLarge, match=r"max\.message\.bytes is 4000"):
            await publisher.publish({"text": "y" * 5000}, source="s", type="t", key="k")
        after = await publisher.publish({"n": 12}, source="s", type="t", key="k")
    assert [m.offset for m in written] == list(range(12))
    assert after.offset == 12
    on_topic = await read_all(kafka_bootstrap, f"{prefix}.events")
    assert [r.json()["id"] for r in on_topic][:12] == [e.id for e in events]
