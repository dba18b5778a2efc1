"""Turn a verified webhook into the CloudEvent that goes on the events topic.

Pure functions: the gateway and the publish client share them, and unit tests cover them
without a server.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from schemas.config_sources import SourceConfig
from schemas.errors import InvalidPayload, TemplateError
from schemas.events import CloudEvent, json_kind
from schemas.templates import lookup
from schemas.tracecontext import (
    TRACEPARENT,
    TRACESTATE,
    TraceContext,
    new_span_id,
    new_trace_id,
    parse,
    request_trace_id,
)
from streams.gateway.signatures import delivery_id_source, type_source

_ABSENT: Any = object()
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_random_bits = random.getrandbits
# A NamedTuple built without its Python-level __new__: EncodedEvent(...) costs 224 ns by
# keyword or position, this 96 ns (per webhook).
_new_tuple = tuple.__new__
_EXACT_FLOAT_INT = 2.0**53


def payload_field(payload: Any, path: str, absent: Any = None) -> Any:
    """Value at a dotted ``path`` of the payload, or ``absent`` when there is none (a field
    holding null is None, not absent)."""
    if "." not in path and type(payload) is dict:  # the common case, on every webhook
        return payload.get(path, absent)
    try:
        return lookup({"payload": payload}, ("payload", *path.split(".")))
    except TemplateError:
        return absent


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def webhook_id(source: SourceConfig, headers: Mapping[str, str], payload: Any, body: bytes) -> str:
    """The sender's delivery id: a header, a payload field, or else a hash of the body.

    A sender retrying the same delivery sends the same id, which is what makes dedupe work.
    The source's ``id_header``/``id_field`` come first; else the signature scheme's own
    delivery id (Standard Webhooks ``webhook-id``, GitHub ``X-GitHub-Delivery``, Stripe's
    payload ``id``); else the body's SHA-256, so identical retries still collapse.
    """
    if source.id_header:
        value = headers.get(source.id_header)
        if value and value.strip():
            return value.strip()
    if source.id_field:
        found = _scalar_text(payload_field(payload, source.id_field))
        if found:
            return found
    scheme_headers, scheme_field = delivery_id_source(source.signature.scheme)
    for name in scheme_headers:
        value = headers.get(name)
        if value and value.strip():
            return value.strip()
    if scheme_field:
        found = _scalar_text(payload_field(payload, scheme_field))
        if found:
            return found
    return "sha256:" + hashlib.sha256(body).hexdigest()


def event_type(source: SourceConfig, headers: Mapping[str, str], payload: Any) -> str:
    """The source's ``type_header``/``type_field``, else the scheme's (GitHub's
    ``X-GitHub-Event``, the payload ``type`` of Stripe and Standard Webhooks), else
    ``default_type``."""
    scheme_header, scheme_field = type_source(source.signature.scheme)
    for name in (source.type_header, scheme_header):
        if name:
            value = headers.get(name)
            if value and value.strip():
                return value.strip()
    for path in (source.type_field, scheme_field):
        if path:
            if "." not in path and type(payload) is dict:  # on every webhook: no calls
                found = payload.get(path)
                if type(found) is str and found:
                    return found
            found = _scalar_text(payload_field(payload, path))
            if found:
                return found
    return source.default_type


def _partition_key(source: SourceConfig, payload: Any, event_id: str) -> str:
    """The source's partition key field as text: a non-empty string, or a 64-bit integer
    (3.0 is 3, up to 2**53); anything else is refused naming its type."""
    path = source.partition_key
    if not path:
        return event_id
    if "." not in path and type(payload) is dict:  # payload_field's common case, inline
        value = payload.get(path, _ABSENT)
    else:
        value = payload_field(payload, path, _ABSENT)
    if type(value) is str and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if type(value) is float and value.is_integer() and abs(value) <= _EXACT_FLOAT_INT:
        # 3.0 is the integer 3 to JSON Schema (and to a fuzzer following the document). Past
        # 2**53 a float no longer tells which integer was written (the JSON parser reads
        # integers beyond 64 bits as floats, too): refused.
        return str(int(value))
    field = f"{source.partition_key!r} (the source's partition_key)"
    if value is _ABSENT:
        raise InvalidPayload(f"the payload has no field {field}", code="missing_partition_key")
    raise InvalidPayload(
        f"the payload's field {field} is {json_kind(value)}; a partition key must be a "
        "non-empty string or an integer",
        code="invalid_partition_key",
    )


def sender_trace(headers: Mapping[str, str]) -> TraceContext | None:
    """The sender's W3C trace context: its ``traceparent`` (one, valid) with its
    ``tracestate``; None otherwise (:mod:`schemas.tracecontext` has the rules)."""
    value = headers.get(TRACEPARENT)
    if value is None:
        return None
    getall = getattr(headers, "getall", None)  # the gateway's headers are a multidict
    if getall is None:
        states = [headers[TRACESTATE]] if TRACESTATE in headers else []
        return parse(value, states)
    if len(getall(TRACEPARENT)) != 1:
        return None
    return parse(value, getall(TRACESTATE, ()))


def request_trace(headers: Mapping[str, str]) -> str | None:
    """The trace id a sender without ``traceparent`` names by a UUID ``X-Request-Id``."""
    return request_trace_id(headers.get("x-request-id"))


def webhook_trace(headers: Mapping[str, str]) -> TraceContext:
    """The trace a webhook's event goes on in, without spans: the sender's context, else a new
    trace (its id from a UUID ``X-Request-Id`` when there is one)."""
    if TRACEPARENT in headers:
        found = sender_trace(headers)
        if found is not None:
            return found
    request_id = headers.get("x-request-id")
    if request_id is not None:
        trace_id = request_trace_id(request_id)
        if trace_id is not None:
            return TraceContext(trace_id, new_span_id())
    # A new trace: its id and the parent id from one draw of the PRNG (not secret, unique).
    ids = f"{_random_bits(192):048x}"
    trace_id, span_id = ids[:32], ids[32:]
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:  # invalid in W3C; 2**-64 odds
        return TraceContext(new_trace_id(), new_span_id())
    return TraceContext(trace_id, span_id)


def build_event(
    source: SourceConfig,
    headers: Mapping[str, str],
    body: bytes,
    payload: Any,
    *,
    forwarded_headers: tuple[str, ...],
    received_at: datetime | None = None,
    trace: TraceContext | None = None,
) -> CloudEvent:
    event_id = webhook_id(source, headers, payload, body)
    kept = _forwarded(headers, forwarded_headers)
    return CloudEvent(
        id=event_id,
        source=source.name,
        type=event_type(source, headers, payload),
        time=received_at or datetime.now(UTC),
        data=payload,
        partitionkey=_partition_key(source, payload, event_id),
        traceid=(trace or webhook_trace(headers)).trace_id,
        webhookheaders=kept,
    )


def _forwarded(headers: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """The forwarded headers the request has (a loop: a comprehension is one more frame)."""
    kept = {}
    for name in names:
        value = headers.get(name)
        if value is not None:
            kept[name] = value
    return kept


class EncodedEvent(NamedTuple):
    """A CloudEvent already serialised for the events topic, with what the answer needs.

    A NamedTuple: built once per webhook, and a frozen dataclass's ``__init__`` costs ~0.6 µs
    more.
    """

    id: str
    source: str
    type: str
    key: str
    value: bytes
    traceid: str
    #: The context the events record carries (its ``traceparent``/``tracestate`` headers).
    trace: TraceContext | None = None


def encode_event(
    source: SourceConfig,
    headers: Mapping[str, str],
    body: bytes,
    payload: Any,
    *,
    forwarded_headers: tuple[str, ...],
    received_at: datetime | None = None,
    trace: TraceContext | None = None,
) -> EncodedEvent:
    """The same JSON as ``dumps(build_event(...))``, without a pydantic model per request.

    The gateway's hot path: the body, already validated as JSON, is embedded byte for byte
    (``orjson.Fragment``) instead of being parsed into objects and serialised again. A unit
    test holds this to :class:`~schemas.events.CloudEvent`'s own serialisation.

    ``trace``: the context to write (the gateway's produce span, when spans are on); without
    it :func:`webhook_trace`'s. The event's ``traceid`` is that context's trace id.
    """
    event_id = webhook_id(source, headers, payload, body)
    key = _partition_key(source, payload, event_id)
    kind = event_type(source, headers, payload)
    if trace is None:
        trace = webhook_trace(headers)
    traceid = trace.trace_id
    document = {
        "specversion": "1.0",
        "id": event_id,
        "source": source.name,
        "type": kind,
        "time": received_at or datetime.now(UTC),
        "datacontenttype": "application/json",
        "data": orjson.Fragment(body),
        "partitionkey": key,
        "traceid": traceid,
        "webhookheaders": _forwarded(headers, forwarded_headers),
    }
    value = orjson.dumps(document, option=orjson.OPT_UTC_Z)
    # = EncodedEvent(event_id, source.name, ...), every field given, in the class's order
    return _new_tuple(EncodedEvent, (event_id, source.name, kind, key, value, traceid, trace))
