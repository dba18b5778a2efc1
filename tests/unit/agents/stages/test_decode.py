"""Decoding an events-topic record written by any producer (issue 17, "Events from any producer").

A CloudEvent needs only what the CloudEvents 1.0 spec requires; the rest comes from the Kafka
record. An invalid record's error lists every problem, each with its field.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pytest

from agents.stages.base import InvalidRecord, binding_headers, decode
from schemas.events import CloudEvent, EnrichedEvent, binary_mode_document, is_json_media_type

MINIMAL = {"specversion": "1.0", "id": "ord-1", "source": "orders", "type": "order.placed"}
STAMP_MS = 1_764_000_000_123
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclass
class Message:
    """The parts of a Faust message the stages read (Faust's timestamp is in seconds)."""

    value: bytes | None
    key: bytes | None = None
    timestamp: float | None = STAMP_MS / 1000
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def decoded(message: Message) -> CloudEvent:
    return decode(CloudEvent, message.value, stage="enrich", message=message)


def test_a_minimal_event_takes_time_and_key_from_the_record() -> None:
    event = decoded(Message(orjson.dumps(MINIMAL), key=b"cus_7"))
    assert event.time == datetime.fromtimestamp(STAMP_MS / 1000, UTC)
    assert event.partitionkey == "cus_7"
    assert event.data is None
    assert event.datacontenttype == "application/json"


def test_without_a_key_the_partition_key_is_the_event_id() -> None:
    assert decoded(Message(orjson.dumps(MINIMAL))).partitionkey == "ord-1"


def test_a_binary_key_stays_distinct_as_hex() -> None:
    key = (42).to_bytes(8, "big") + b"\xff"
    assert decoded(Message(orjson.dumps(MINIMAL), key=key)).partitionkey == "0x" + key.hex()


def test_the_trace_id_comes_from_traceparent_else_from_source_and_id() -> None:
    traceparent = f"00-{TRACE}-00f067aa0ba902b7-01".encode()
    with_header = Message(orjson.dumps(MINIMAL), headers=[("traceparent", traceparent)])
    assert decoded(with_header).traceid == TRACE
    # Derived, so a redo of the same event carries the same trace id.
    expected = hashlib.sha256(b"orders/ord-1").hexdigest()[:32]
    assert decoded(Message(orjson.dumps(MINIMAL))).traceid == expected
    malformed = Message(orjson.dumps(MINIMAL), headers=[("traceparent", b"00-zz-01")])
    assert decoded(malformed).traceid == expected


def test_attributes_given_are_kept_over_the_records() -> None:
    given = {**MINIMAL, "time": "2026-01-02T03:04:05Z", "partitionkey": "k", "traceid": TRACE}
    event = decoded(Message(orjson.dumps(given), key=b"other"))
    assert (event.time, event.partitionkey, event.traceid) == (
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "k",
        TRACE,
    )


def test_a_record_without_a_timestamp_gets_the_time_of_reading() -> None:
    before = datetime.now(UTC)
    assert decoded(Message(orjson.dumps(MINIMAL), timestamp=-0.001)).time >= before


def test_every_problem_is_listed_with_its_field() -> None:
    bad = {"specversion": "0.3", "source": "orders", "type": 7, "time": "yesterday"}
    with pytest.raises(InvalidRecord) as caught:
        decoded(Message(orjson.dumps(bad)))
    message = str(caught.value)
    assert "(4 problems)" in message
    assert "specversion: Input should be '1.0' (got a string)" in message
    assert "id: Field required" in message
    assert "type: Input should be a valid string (got an integer)" in message
    assert "time: Input should be a valid datetime" in message


def test_nested_problems_name_their_whole_path() -> None:
    value = orjson.dumps({"flow": "f", "event": {**MINIMAL, "id": ""}, "enrichment": []})
    with pytest.raises(InvalidRecord) as caught:
        decode(EnrichedEvent, value, stage="ai")
    assert "(2 problems)" in str(caught.value)
    assert "event.id: String should have at least 1 character (got an empty string)" in str(
        caught.value
    )
    assert "enrichment: Input should be a valid dictionary (got a list)" in str(caught.value)


def test_not_json_is_refused_as_such() -> None:
    with pytest.raises(InvalidRecord, match="value is not JSON"):
        decoded(Message(b"{not json"))


# --- binary mode (CloudEvents Kafka protocol binding) -------------------------------------------


def binary(value: bytes | None, content_type: str | None = "application/json") -> Message:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"ord-2"),
        ("ce_source", b"orders"),
        ("ce_type", b"order.placed"),
        ("ce_time", b"2026-03-04T05:06:07Z"),
    ]
    if content_type is not None:
        headers.append(("content-type", content_type.encode()))
    return Message(value, key=b"cus_9", headers=headers)


def test_a_binary_mode_record_is_read_from_its_headers() -> None:
    event = decoded(binary(b'{"total": 12}'))
    assert (event.id, event.source, event.type) == ("ord-2", "orders", "order.placed")
    assert event.time == datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert event.data == {"total": 12}
    assert event.partitionkey == "cus_9"


def test_binary_mode_data_by_content_type() -> None:
    assert decoded(binary(b'"x"', None)).data == "x"  # absent: JSON
    assert decoded(binary(b"plain words", "text/plain; charset=utf-8")).data == "plain words"
    assert decoded(binary(None)).data is None
    with pytest.raises(InvalidRecord, match="content-type 'application/avro' is not supported"):
        decoded(binary(b"\x00\x01", "application/avro"))
    with pytest.raises(InvalidRecord, match=r"value is not JSON \(content-type application/json"):
        decoded(binary(b"{oops"))


def test_structured_content_type_wins_over_stray_ce_headers() -> None:
    message = binary(orjson.dumps({**MINIMAL, "data": 1}), "application/cloudevents+json")
    assert decoded(message).id == "ord-1"


def test_binary_mode_problems_are_listed_like_structured_ones() -> None:
    message = Message(b"{}", headers=[("ce_specversion", b"1.0"), ("ce_source", b"s")])
    with pytest.raises(InvalidRecord) as caught:
        decoded(message)
    assert "id: Field required" in str(caught.value)
    assert "type: Field required" in str(caught.value)


def test_a_dead_letter_keeps_the_binding_headers() -> None:
    message = binary(b"{}")
    message.headers.append(("hookstream-replay", b"r1"))
    kept = dict(binding_headers(message))
    assert kept["ce_id"] == b"ord-2"
    assert kept["content-type"] == b"application/json"
    assert "hookstream-replay" not in kept


def test_structured_records_are_not_binary_mode() -> None:
    assert binary_mode_document(b"{}", [("content-type", b"application/json")]) is None


@pytest.mark.parametrize(
    ("content_type", "json"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/cloudevents+json", True),
        ("application/vnd.api+json", True),
        ("text/plain", False),
        ("text/json", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/jsonx", False),
        ("", False),
    ],
)
def test_json_media_types(content_type: str, json: bool) -> None:
    assert is_json_media_type(content_type) is json
