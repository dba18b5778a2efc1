"""Events written straight to the events topic by a producer that is not hookstream (issue 17).

No kcat here (`which kcat`: not installed), so aiokafka writes the raw bytes and headers a
Go, Java or kcat producer would: a structured-mode CloudEvent with only the attributes the
spec requires, a binary-mode one (``ce_*`` headers, CloudEvents Kafka protocol binding), and an
invalid one with three problems. Everything downstream is the real worker, sinks, broker and
simulators.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from schemas.events import AIResult, DeadLetter
from schemas.tracecontext import derived_trace_id
from streams.kafka.connection import client_kwargs
from tests.support.kafka import Record, read_all, settings_of, wait_for_records
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
STAMP = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("anyproducer")
    async with running_stack(kafka_bootstrap, workdir) as running:
        yield running


async def produce_raw(
    stack: Stack, value: bytes, *, key: bytes | None = None, headers: list[tuple[str, bytes]]
) -> None:
    """One record as a foreign producer writes it: bytes, an optional key, its own headers."""
    producer = AIOKafkaProducer(**client_kwargs(settings_of(stack.bootstrap)), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            stack.topic("events"),
            value,
            key=key,
            headers=headers,
            timestamp_ms=int(STAMP.timestamp() * 1000),
        )
    finally:
        await producer.stop()


def ticket(customer: str) -> dict[str, Any]:
    return {"customer_id": customer, "message": "The new dashboard is great, thank you!"}


async def result_of(stack: Stack, event_id: str) -> tuple[AIResult, Record]:
    def done(records: list[Record]) -> bool:
        return any(r.json()["event"]["id"] == event_id for r in records)

    records = await wait_for_records(stack.bootstrap, stack.topic("results"), done, timeout_s=90)
    found = [r for r in records if r.json()["event"]["id"] == event_id]
    assert len(found) == 1
    return AIResult.model_validate(found[0].json()), found[0]


async def test_a_minimal_structured_cloudevent_gets_a_result(stack: Stack) -> None:
    event_id = f"ext-{uuid.uuid4().hex}"
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": "helpdesk",
        "type": "ticket.created",
        "data": ticket("cus_021"),
    }  # no time, traceid, partitionkey, datacontenttype
    await produce_raw(stack, orjson.dumps(event), key=b"cus_021", headers=[])
    result, record = await result_of(stack, event_id)
    assert result.flow == "feedback-triage"
    assert result.output["sentiment"] == "positive"
    assert result.event.time == STAMP  # the record's timestamp
    assert result.event.partitionkey == "cus_021"  # the record's key
    assert record.key == b"cus_021"
    assert result.event.traceid == hashlib.sha256(f"helpdesk/{event_id}".encode()).hexdigest()[:32]


async def test_without_a_key_the_event_id_is_the_key(stack: Stack) -> None:
    event_id = f"ext-{uuid.uuid4().hex}"
    trace = uuid.uuid4().hex
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": "helpdesk",
        "type": "ticket.created",
        "data": ticket("cus_022"),
    }
    traceparent = f"00-{trace}-00f067aa0ba902b7-01".encode()
    await produce_raw(stack, orjson.dumps(event), headers=[("traceparent", traceparent)])
    result, record = await result_of(stack, event_id)
    assert result.event.partitionkey == event_id
    assert record.key == event_id.encode()
    assert result.event.traceid == trace


async def test_a_binary_mode_cloudevent_gets_a_result(stack: Stack) -> None:
    event_id = f"ext-{uuid.uuid4().hex}"
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", b"helpdesk"),
        ("ce_type", b"ticket.created"),
        ("content-type", b"application/json"),
    ]
    await produce_raw(stack, orjson.dumps(ticket("cus_023")), key=b"cus_023", headers=headers)
    result, _ = await result_of(stack, event_id)
    assert result.event.data == ticket("cus_023")
    assert result.event.time == STAMP
    assert result.event.partitionkey == "cus_023"
    assert result.output["sentiment"] == "positive"


async def test_an_event_with_three_problems_gets_one_dead_letter_naming_all(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    event = {
        "specversion": "1.0",  # no id
        "source": "helpdesk",
        "type": 7,
        "time": "yesterday",
        "data": {**ticket("cus_024"), "marker": marker},
    }
    await produce_raw(stack, orjson.dumps(event), key=b"cus_024", headers=[])

    def mine(records: list[Record]) -> list[Record]:
        return [r for r in records if (r.json().get("data") or {}).get("marker") == marker]

    records = await wait_for_records(
        stack.bootstrap, stack.topic("dlq"), lambda rs: bool(mine(rs)), timeout_s=60
    )
    letters = mine(records)
    assert len(letters) == 1
    letter = DeadLetter.from_headers(list(letters[0].headers.items()), letters[0].json())
    assert (letter.stage, letter.error_class, letter.attempts) == ("enrich", "InvalidRecord", 1)
    message = letter.error_message
    assert "value is not a CloudEvent (3 problems):" in message
    assert "id: Field required" in message
    assert "type: Input should be a valid string (got an integer)" in message
    assert "time: Input should be a valid datetime" in message
    assert letter.original_topic == stack.topic("events")
    assert letters[0].value == orjson.dumps(event)  # byte for byte, for the redrive
    assert not [
        r for r in await read_all(stack.bootstrap, stack.topic("results")) if marker in str(r.value)
    ]


async def test_a_binary_mode_dead_letter_keeps_the_ce_headers(stack: Stack) -> None:
    """Its attributes live in the headers: without them a redrive would write bare data."""
    marker = uuid.uuid4().hex
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", marker.encode()),
        ("ce_source", b"helpdesk"),  # no ce_type
        ("content-type", b"application/json"),
    ]
    await produce_raw(stack, orjson.dumps({"marker": marker}), headers=headers)

    def mine(records: list[Record]) -> list[Record]:
        return [r for r in records if r.headers.get("ce_id") == marker.encode()]

    records = await wait_for_records(
        stack.bootstrap, stack.topic("dlq"), lambda rs: bool(mine(rs)), timeout_s=60
    )
    letter = mine(records)
    assert len(letter) == 1
    kept = letter[0].headers
    # Beside the binding's headers, the trace context every dead letter carries: here the
    # trace of the event's source/id, as the record names no trace (schemas.tracecontext).
    trace = derived_trace_id("helpdesk", marker)
    assert kept.pop("traceparent").startswith(f"00-{trace}-".encode())
    assert {k: v for k, v in kept.items() if not k.startswith("hookstream-")} == dict(headers)
    assert b"type: Field required" in letter[0].headers["hookstream-dlq-error_message"]
