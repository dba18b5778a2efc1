"""schemas.codec.dumps writes a model through pydantic-core's serializer (issue 16): its bytes
must be those that ``orjson.dumps(model.model_dump(mode="json"))`` wrote before, so that
records, dedupe keys computed from them and consumers in other languages see no change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from schemas.codec import dumps
from schemas.events import AIResult, CloudEvent, DeliveryReceipt, EnrichedEvent, TokenUsage


def event(data: Any) -> CloudEvent:
    return CloudEvent.model_validate(
        {
            "specversion": "1.0",
            "id": "msg_1",
            "source": "helpdesk",
            "type": "ticket.created",
            "time": "2026-12-07T10:00:00.123456+02:00",
            "partitionkey": "cust-1",
            "data": data,
        }
    )


DATA = [
    {"subject": "Printer on fire é ✓ 🔥", "quote": 'a "b" \\ c\n\t', "control": "\x01\x7f"},
    {"floats": [0.1 + 0.2, 1e-7, 1.0, -0.0, 1.5e300, 123456789.125], "ints": [0, -1, 2**63 - 1]},
    {"nested": {"a": [None, True, False, {"b": []}]}, "empty": {}},
    [1, "two", 3.0],
    None,
]


@pytest.mark.parametrize("data", DATA)
def test_a_model_is_written_as_model_dump_and_orjson_wrote_it(data: Any) -> None:
    ce = event(data)
    models = [
        ce,
        EnrichedEvent(flow="triage", event=ce, enrichment={"crm": {"tier": "gold", "n": 0.5}}),
        AIResult(
            flow="triage",
            event=ce,
            provider="sim",
            model="m",
            output={"summary": "é✓", "score": 0.30000000000000004, "data": data},
            usage=TokenUsage(prompt_tokens=12, completion_tokens=3, total_tokens=15),
            latency_ms=1.5,
            attempts=1,
            cost_usd=1.2e-05,
            produced_at=datetime(2026, 12, 7, 9, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5))),
        ),
        DeliveryReceipt(
            flow="triage",
            sink="crm",
            event_key="k",
            idempotency_key="i",
            status=200,
            attempts=1,
            delivered_at=datetime(2026, 12, 7, tzinfo=UTC),
        ),
    ]
    for model in models:
        assert dumps(model) == orjson.dumps(model.model_dump(mode="json"))


def test_plain_values_are_written_by_orjson() -> None:
    value = {"a": [1, 2.5, "é"], "b": None}
    assert dumps(value) == orjson.dumps(value)
