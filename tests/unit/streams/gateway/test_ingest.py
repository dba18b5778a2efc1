"""From a verified webhook to its CloudEvent: id, type, partition key, forwarded headers."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict

from schemas.codec import dumps
from schemas.config import DEFAULT_FORWARDED_HEADERS
from schemas.config_sources import SignatureConfig, SourceConfig
from schemas.errors import InvalidPayload
from schemas.events import CloudEvent
from schemas.tracecontext import TraceContext, parse_traceparent
from streams.gateway.ingest import (
    build_event,
    encode_event,
    event_type,
    payload_field,
    webhook_id,
    webhook_trace,
)

PAYLOAD: dict[str, Any] = {
    "id": "evt_123",
    "type": "payment.failed",
    "event": "ticket.created",
    "customer_id": "cus-9",
    "data": {"customer": "cus-42", "amount": 1200, "refs": [{"n": 7}]},
}
BODY = orjson.dumps(PAYLOAD)
RECEIVED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def source(**overrides: Any) -> SourceConfig:
    fields: dict[str, Any] = {"name": "payments", "signature": SignatureConfig(scheme="none")}
    fields.update(overrides)
    return SourceConfig(**fields)


def http_headers(**pairs: str) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in pairs.items():
        headers[name.replace("_", "-")] = value
    return headers


# --- payload_field ------------------------------------------------------------------------


def test_payload_field_follows_nested_paths_and_indices() -> None:
    assert payload_field(PAYLOAD, "data.customer") == "cus-42"
    assert payload_field(PAYLOAD, "data.refs.0.n") == 7


def test_payload_field_is_none_when_absent() -> None:
    assert payload_field(PAYLOAD, "data.nope") is None
    assert payload_field(["not", "a", "mapping"], "id") is None


# --- webhook id ---------------------------------------------------------------------------


def test_webhook_id_from_header() -> None:
    src = source(id_header="X-Webhook-Id", id_field="id")
    headers = http_headers(x_webhook_id="  wh-777 ")
    assert webhook_id(src, headers, PAYLOAD, BODY) == "wh-777"


def test_webhook_id_falls_back_to_payload_field_when_header_absent() -> None:
    src = source(id_header="X-Webhook-Id", id_field="id")
    assert webhook_id(src, http_headers(), PAYLOAD, BODY) == "evt_123"


def test_webhook_id_from_nested_integer_field() -> None:
    src = source(id_field="data.amount")
    assert webhook_id(src, http_headers(), PAYLOAD, BODY) == "1200"


def test_webhook_id_from_body_hash_is_stable() -> None:
    src = source()
    expected = "sha256:" + hashlib.sha256(BODY).hexdigest()
    assert webhook_id(src, http_headers(), PAYLOAD, BODY) == expected
    assert webhook_id(src, http_headers(), PAYLOAD, bytes(BODY)) == expected
    other = webhook_id(src, http_headers(), PAYLOAD, BODY + b" ")
    assert other.startswith("sha256:")
    assert other != expected


@pytest.mark.parametrize("value", [None, "", True, 1.5, {"x": 1}])
def test_webhook_id_field_that_is_not_a_usable_scalar_falls_back_to_hash(value: Any) -> None:
    src = source(id_field="id")
    payload = {**PAYLOAD, "id": value}
    body = orjson.dumps(payload)
    assert webhook_id(src, http_headers(), payload, body) == (
        "sha256:" + hashlib.sha256(body).hexdigest()
    )


# --- event type ---------------------------------------------------------------------------


def test_type_from_header_wins_over_field() -> None:
    src = source(type_header="X-Event-Type", type_field="type")
    assert event_type(src, http_headers(x_event_type="invoice.paid"), PAYLOAD) == "invoice.paid"


def test_type_from_field_when_header_absent() -> None:
    src = source(type_header="X-Event-Type", type_field="type")
    assert event_type(src, http_headers(), PAYLOAD) == "payment.failed"


def test_type_default_when_neither_is_present() -> None:
    assert event_type(source(), http_headers(), PAYLOAD) == "webhook"
    src = source(type_field="missing.path", default_type="generic")
    assert event_type(src, http_headers(), PAYLOAD) == "generic"


# --- build_event --------------------------------------------------------------------------


def test_build_event_uses_the_nested_partition_key() -> None:
    src = source(id_field="id", type_field="type", partition_key="data.customer")
    event = build_event(
        src,
        http_headers(traceparent=f"00-{TRACE_ID}-00f067aa0ba902b7-01", x_request_id="req-1"),
        BODY,
        PAYLOAD,
        forwarded_headers=DEFAULT_FORWARDED_HEADERS,
        received_at=RECEIVED,
    )
    assert event.partitionkey == "cus-42"
    assert event.id == "evt_123"
    assert event.type == "payment.failed"
    assert event.source == "payments"
    assert event.time == RECEIVED
    assert event.data == PAYLOAD
    assert event.traceid == TRACE_ID  # the sender's traceparent wins over any X-Request-Id
    assert event.event_key == "payments/evt_123"


def test_build_event_without_partition_key_uses_the_webhook_id() -> None:
    event = build_event(source(id_field="id"), http_headers(), BODY, PAYLOAD, forwarded_headers=())
    assert event.partitionkey == "evt_123"
    assert len(event.traceid) == 32


@pytest.mark.parametrize("path", ["data.customer_id", "nope", "data.refs.3", "customer_id.x"])
def test_missing_partition_key_is_invalid_payload(path: str) -> None:
    src = source(partition_key=path)
    with pytest.raises(InvalidPayload) as info:
        build_event(src, http_headers(), BODY, PAYLOAD, forwarded_headers=())
    assert info.value.code == "missing_partition_key"
    assert info.value.status == 400
    assert f"has no field {path!r}" in str(info.value)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "null"),
        (1.5, "a float"),
        (1e20, "a float"),
        (True, "a boolean"),
        (False, "a boolean"),
        ({"id": 1}, "an object"),
        (["cus-1"], "a list"),
        ("", "an empty string"),
    ],
)
def test_a_partition_key_of_the_wrong_type_is_named_with_its_type(value: Any, kind: str) -> None:
    payload = {"customer": {"id": value}}
    body = orjson.dumps(payload)
    for build in (build_event, encode_event):
        with pytest.raises(InvalidPayload) as info:
            build(
                source(partition_key="customer.id"),
                http_headers(),
                body,
                payload,
                forwarded_headers=(),
            )
        assert (info.value.code, info.value.status) == ("invalid_partition_key", 400)
        detail = str(info.value)
        assert f"field 'customer.id' (the source's partition_key) is {kind};" in detail
        assert "has no field" not in detail


@pytest.mark.parametrize(
    ("value", "key"),
    [("cus-1", "cus-1"), (42, "42"), (0, "0"), (-3, "-3"), (7.0, "7"), (-0.0, "0")],
)
def test_strings_and_integers_are_partition_keys(value: Any, key: str) -> None:
    payload = {"customer_id": value}
    body = orjson.dumps(payload)
    src = source(partition_key="customer_id")
    assert build_event(src, http_headers(), body, payload, forwarded_headers=()).partitionkey == key
    assert encode_event(src, http_headers(), body, payload, forwarded_headers=()).key == key


def test_only_the_forwarded_subset_of_headers_is_kept() -> None:
    headers = http_headers(
        user_agent="Helpdesk/2.0",
        content_type="application/json",
        x_signature="sha256=deadbeef",
        x_payments_timestamp="1700000000",
        authorization="Bearer token-xyz",
        cookie="session=abc",
        x_other="ignored",
    )
    event = build_event(
        source(), headers, BODY, PAYLOAD, forwarded_headers=("user-agent", "content-type", "x-gone")
    )
    assert event.webhookheaders == {
        "user-agent": "Helpdesk/2.0",
        "content-type": "application/json",
    }


def test_default_forwarded_headers_never_include_signatures_or_credentials() -> None:
    headers = http_headers(
        user_agent="Helpdesk/2.0",
        x_request_id="req-9",
        x_signature="sha256=deadbeef",
        x_hub_signature_256="sha256=cafe",
        authorization="Bearer token-xyz",
    )
    event = build_event(
        source(), headers, BODY, PAYLOAD, forwarded_headers=DEFAULT_FORWARDED_HEADERS
    )
    assert event.webhookheaders == {"user-agent": "Helpdesk/2.0", "x-request-id": "req-9"}
    serialized = event.model_dump_json()
    assert "deadbeef" not in serialized
    assert "cafe" not in serialized
    assert "token-xyz" not in serialized


# --- the signature scheme's delivery id and type; the hot-path encoder ----------------------


def scheme_source(scheme: str, **overrides: Any) -> SourceConfig:
    secret = "whsec_" + "A" * 40 if scheme == "standard-webhooks" else "s"
    signature = SignatureConfig(scheme=scheme, secret_env="S", secret=secret)  # type: ignore[arg-type]
    return source(signature=signature, **overrides)


@pytest.mark.parametrize(
    ("scheme", "headers", "expected"),
    [
        ("standard-webhooks", {"webhook_id": "msg_1"}, "msg_1"),
        ("standard-webhooks", {"svix_id": "msg_2"}, "msg_2"),
        ("github", {"x_github_delivery": "72d3162e-cc78-11e3"}, "72d3162e-cc78-11e3"),
        ("stripe", {}, "evt_123"),
    ],
)
def test_each_scheme_yields_the_senders_delivery_id(
    scheme: str, headers: dict[str, str], expected: str
) -> None:
    assert webhook_id(scheme_source(scheme), http_headers(**headers), PAYLOAD, BODY) == expected


def test_the_sources_own_id_setting_wins_over_the_schemes() -> None:
    src = scheme_source("github", id_header="X-Other-Id")
    headers = http_headers(x_other_id="mine", x_github_delivery="theirs")
    assert webhook_id(src, headers, PAYLOAD, BODY) == "mine"


def test_scheme_types() -> None:
    assert event_type(scheme_source("github"), http_headers(x_github_event="push"), PAYLOAD) == (
        "push"
    )
    assert event_type(scheme_source("stripe"), http_headers(), PAYLOAD) == "payment.failed"


def test_encode_event_is_the_cloudevent_serialisation() -> None:
    src = source(id_field="id", type_field="type", partition_key="data.customer")
    headers = http_headers(user_agent="ua", x_request_id=TRACE_ID, x_signature="never")
    body = b'{"id": "evt_9", "type": "t.x", "data": {"customer": "c-1", "s": "h\\u00e9"}}\n'
    payload = orjson.loads(body)
    for received in (RECEIVED, RECEIVED.replace(microsecond=123456)):
        model = build_event(
            src,
            headers,
            body,
            payload,
            forwarded_headers=DEFAULT_FORWARDED_HEADERS,
            received_at=received,
        )
        encoded = encode_event(
            src,
            headers,
            body,
            payload,
            forwarded_headers=DEFAULT_FORWARDED_HEADERS,
            received_at=received,
        )
        assert orjson.loads(encoded.value) == orjson.loads(dumps(model))
        assert CloudEvent.model_validate_json(encoded.value) == model
        assert (encoded.id, encoded.type, encoded.key) == ("evt_9", "t.x", "c-1")


# --- the webhook's trace ------------------------------------------------------------------


def test_the_senders_traceparent_and_tracestate_are_continued() -> None:
    sent = f"00-{TRACE_ID}-00f067aa0ba902b7-00"
    trace = webhook_trace(http_headers(traceparent=sent, tracestate="vendor=1"))
    assert trace == TraceContext(TRACE_ID, "00f067aa0ba902b7", 0, "vendor=1")
    encoded = encode_event(
        source(id_field="id"),
        http_headers(traceparent=sent),
        BODY,
        PAYLOAD,
        forwarded_headers=(),
    )
    assert encoded.trace is not None
    assert encoded.trace.traceparent() == sent
    assert orjson.loads(encoded.value)["traceid"] == TRACE_ID == encoded.traceid


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01", "tracestate": "v=1"},
        {"traceparent": "garbage", "x-request-id": "req-1"},
        {},
    ],
)
def test_without_a_valid_traceparent_a_new_trace_starts(headers: dict[str, str]) -> None:
    given = CIMultiDict(headers)
    first, second = webhook_trace(given), webhook_trace(given)
    assert first.trace_id != second.trace_id
    for trace in (first, second):
        assert parse_traceparent(trace.traceparent()) == trace._replace(state=None)
        assert trace.sampled
        assert trace.state is None  # an invalid traceparent's tracestate is not read


def test_a_uuid_request_id_names_the_new_trace() -> None:
    request_id = "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
    assert webhook_trace(http_headers(x_request_id=request_id)).trace_id == TRACE_ID
    assert webhook_trace(http_headers(x_request_id=TRACE_ID)).trace_id == TRACE_ID
    sent = f"00-{'a' * 32}-00f067aa0ba902b7-01"
    both = http_headers(x_request_id=request_id, traceparent=sent)
    assert webhook_trace(both).trace_id == "a" * 32


def test_two_traceparent_headers_start_a_new_trace() -> None:
    headers: CIMultiDict[str] = CIMultiDict()
    headers.add("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01")
    headers.add("traceparent", f"00-{'a' * 32}-00f067aa0ba902b7-01")
    assert webhook_trace(headers).trace_id not in (TRACE_ID, "a" * 32)


def test_several_tracestate_headers_are_one_list() -> None:
    headers: CIMultiDict[str] = CIMultiDict()
    headers.add("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01")
    headers.add("tracestate", "a=1")
    headers.add("tracestate", "b=2")
    assert webhook_trace(headers).state == "a=1,b=2"
