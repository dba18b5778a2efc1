"""Models of everything hookstream writes to a topic.

Every value is plain JSON (see :mod:`schemas.codec`), so any Kafka client in any language can
read it. The event envelope is a CloudEvents 1.0 structured-mode JSON document; hookstream's
own attributes are CloudEvents extension attributes (lower-case letters and digits only, as the
spec requires).

The events topic also takes events that hookstream did not write (a Go, Java or kcat producer):
such an event needs only the attributes the CloudEvents spec requires (``specversion``, ``id``,
``source``, ``type``). ``time``, ``partitionkey`` and ``traceid`` are filled in from the Kafka
record around it (:class:`RecordFacts`), and a binary-mode record (``ce_*`` headers, the
CloudEvents Kafka protocol binding) is read as the structured document it stands for
(:func:`binary_mode_document`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class RecordFacts(NamedTuple):
    """What the Kafka record carrying an event says about it: the source of the attributes a
    producer other than hookstream may leave out (see :meth:`CloudEvent.model_validate` with
    ``context={"record": facts}``)."""

    key: bytes | None = None
    timestamp_ms: int | None = None
    traceparent: bytes | None = None


# W3C Trace Context: version-traceid-parentid-flags; an all-zero trace id is invalid.
_TRACEPARENT = re.compile(rb"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
# Attributes hookstream always writes but the CloudEvents spec does not require.
_FILLED_IN = ("time", "partitionkey", "traceid")


def _no_default(schema: dict[str, Any]) -> None:
    """The JSON Schema of a field filled in at validation: optional, with no fixed default."""
    schema.pop("default", None)


class CloudEvent(_Model):
    """One received webhook (or published event), as it sits on the events topic.

    Required are only the attributes the CloudEvents 1.0 spec requires (``id``, ``source``,
    ``type``; ``specversion`` is 1.0 when absent). When ``time``, ``partitionkey`` or
    ``traceid`` is absent, it is taken from the Kafka record (validation context ``record``, a
    :class:`RecordFacts`): the record's timestamp; its key, else the event id; the trace id of
    its ``traceparent`` header, else one derived from ``source/id`` (the same on every redo).
    """

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(
        min_length=1, description="Webhook id given by the sender, or a hash of the body."
    )
    source: str = Field(min_length=1, description="Name of the configured source that received it.")
    type: str = Field(min_length=1, description="Event type, e.g. 'ticket.created'.")
    time: datetime = Field(
        default_factory=utc_now,
        description="When hookstream accepted the event (UTC). Absent: the Kafka record's "
        "timestamp.",
    )
    datacontenttype: str = "application/json"
    data: Any = Field(default=None, description="The webhook body, parsed JSON.")
    partitionkey: str = Field(
        default="",
        json_schema_extra=_no_default,
        description="Kafka key: events with the same key stay in order. Absent: the Kafka "
        "record's key (UTF-8), else the event id.",
    )
    traceid: str = Field(
        default="",
        json_schema_extra=_no_default,
        description="Trace id, carried to every derived record. Absent: the trace id of the "
        "record's traceparent header, else a hash of source and id.",
    )
    webhookheaders: dict[str, str] = Field(
        default_factory=dict,
        description="A safe subset of the received HTTP headers (never signatures or auth).",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_in_from_record(cls, data: Any, info: ValidationInfo) -> Any:
        """Absent optional attributes from the record (or the event's own id, without one).

        Before validation, so a value that is present but wrong is still reported as such; a
        value that cannot be filled in (no usable id) is left to the id's own error.
        """
        if not isinstance(data, dict) or all(data.get(name) is not None for name in _FILLED_IN):
            return data
        context = info.context if isinstance(info.context, dict) else {}
        record = context.get("record")
        facts = record if isinstance(record, RecordFacts) else RecordFacts()
        filled = dict(data)
        stamp_ms = facts.timestamp_ms
        if filled.get("time") is None and stamp_ms is not None and stamp_ms >= 0:  # -1: none
            filled["time"] = datetime.fromtimestamp(stamp_ms / 1000, UTC)
        event_id, source = data.get("id"), data.get("source")
        if filled.get("partitionkey") is None:
            if facts.key is not None:
                filled["partitionkey"] = _key_text(facts.key)
            elif isinstance(event_id, str):
                filled["partitionkey"] = event_id
        if filled.get("traceid") is None:
            found = _TRACEPARENT.match(facts.traceparent or b"")
            if found and found.group(1) != b"0" * 32:
                filled["traceid"] = found.group(1).decode()
            elif isinstance(event_id, str) and isinstance(source, str):
                digest = hashlib.sha256(f"{source}/{event_id}".encode()).hexdigest()
                filled["traceid"] = digest[:32]
        return {k: v for k, v in filled.items() if v is not None or k not in _FILLED_IN}

    @property
    def event_key(self) -> str:
        """Identity of the event across sources: the basis of every idempotency key."""
        return f"{self.source}/{self.id}"


def json_kind(value: Any) -> str:
    """A JSON value's type as an error message names it: the value itself may be large or
    private, its type is what the sender has to fix."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "an integer" if isinstance(value, int) else "a float"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    return "a list" if isinstance(value, list | tuple) else "an object"


def _key_text(key: bytes) -> str:
    """A record key as a partition key: its UTF-8 text, or ``0x<hex>`` for a binary key (a
    Java LongSerializer's, say), so that distinct keys stay distinct."""
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "0x" + key.hex()


CE_HEADER_PREFIX = "ce_"
_JSON_MEDIA_TYPE = re.compile(r"^application/([^/;]*\+)?json$")


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or any ``application/*+json`` (RFC 6839 structured syntax suffix,
    e.g. ``application/cloudevents+json``); parameters (``; charset=utf-8``) are ignored and
    case does not matter."""
    return _JSON_MEDIA_TYPE.match(content_type.partition(";")[0].strip().lower()) is not None


def binary_mode_document(
    value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> dict[str, Any] | None:
    """The structured document of a binary-mode record, or None when the record is not one.

    The CloudEvents Kafka protocol binding's binary mode: each attribute is a header
    ``ce_<name>`` (UTF-8), ``content-type`` is ``datacontenttype`` and the value is ``data``.
    A record is in binary mode when it has a ``ce_specversion`` header and its content-type is
    not ``application/cloudevents…`` (structured mode). ``data`` is parsed as
    JSON when the content type is JSON or absent, read as text for ``text/*``; other content
    types are refused (hookstream's flows read JSON). Raises ValueError naming the header or
    the value at fault.
    """
    attributes: dict[str, Any] = {}
    content_type: str | None = None
    for name, raw in headers:
        lowered = name.lower()
        if lowered.startswith(CE_HEADER_PREFIX):
            try:
                attributes[lowered[len(CE_HEADER_PREFIX) :]] = bytes(raw).decode()
            except UnicodeDecodeError:
                raise ValueError(f"header {name!r} is not UTF-8 text") from None
        elif lowered == "content-type":
            content_type = bytes(raw).decode(errors="replace")
    structured = content_type is not None and content_type.lower().startswith(
        "application/cloudevents"
    )
    if "specversion" not in attributes or structured:  # the binding's rule: content-type wins
        return None
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    attributes["data"] = _binary_data(value, content_type)
    return attributes


def _binary_data(value: bytes | None, content_type: str | None) -> Any:
    if value is None:
        return None
    if content_type is None or is_json_media_type(content_type):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            shown = content_type or "absent, so JSON"
            raise ValueError(f"value is not JSON (content-type {shown}): {exc}") from None
    if content_type.lower().startswith("text/"):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise ValueError(f"value is not UTF-8 text (content-type {content_type})") from None
    raise ValueError(
        f"binary-mode data of content-type {content_type!r} is not supported: send JSON or text"
    )


class EnrichedEvent(_Model):
    """An event matched to one flow, with the results of that flow's lookups."""

    flow: str
    event: CloudEvent
    enrichment: dict[str, Any] = Field(default_factory=dict)
    enriched_at: datetime = Field(default_factory=utc_now)


class TokenUsage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AIResult(_Model):
    """The typed answer of a flow's AI task for one event."""

    flow: str
    event: CloudEvent
    enrichment: dict[str, Any] = Field(default_factory=dict)
    provider: str
    model: str
    output: dict[str, Any] = Field(
        description="The model's answer, valid for the flow's schema (a multi-step flow: the "
        "last step's; a flow with no AI step: its output mapping, rendered)."
    )
    steps: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="A multi-step flow: each step's answer by step name; empty otherwise.",
    )
    usage: TokenUsage = Field(default_factory=TokenUsage)
    latency_ms: float = Field(
        description="Wall time of the successful call (a multi-step flow: its steps' summed)."
    )
    attempts: int = Field(
        description="Calls made, including the successful one (every step's; 0: no AI step)."
    )
    cached: bool = False
    produced_at: datetime = Field(default_factory=utc_now)
    cost_usd: float = Field(
        default=0.0, description="Cost of this event's calls from the price table; 0 if cached."
    )
    fallback: bool = Field(
        default=False, description="True when a fallback (not the flow's primary) answered."
    )
    reasked: bool = Field(
        default=False, description="True when the first answer was invalid and the model re-asked."
    )


class DeliveryReceipt(_Model):
    """What a sink delivered where; one per successful delivery, and one per result a sink
    chose not to deliver because its ``when`` was false (``outcome`` skipped_when, ``status``
    and ``attempts`` 0), so a trace shows why nothing arrived."""

    flow: str
    sink: str
    event_key: str
    idempotency_key: str
    status: int
    attempts: int
    delivered_at: datetime = Field(default_factory=utc_now)
    outcome: Literal["delivered", "skipped_when"] = "delivered"


DLQ_HEADER_PREFIX = "hookstream-dlq-"


class DeadLetter(_Model):
    """A record that failed a stage, as the DLQ tools present it.

    On the topic, the value is the original record's value byte for byte (so redriving is
    exact) and these fields travel as Kafka headers named ``hookstream-dlq-<field>``.
    """

    stage: str
    error_class: str
    error_message: str
    attempts: int
    first_failure_at: datetime
    last_failure_at: datetime
    original_topic: str
    original_partition: int
    original_offset: int
    value_omitted: str | None = Field(
        default=None,
        description="Set when the dead letter could not hold the original value (over the DLQ "
        "topic's max.message.bytes): why, and its size. The value is empty; the original is "
        "still at original_topic/partition/offset, where a redrive reads it.",
    )
    original: Any = Field(default=None, description="The original value, parsed JSON.")

    @classmethod
    def of(
        cls,
        error: BaseException,
        *,
        stage: str,
        original_topic: str,
        original_partition: int,
        original_offset: int,
        attempts: int = 1,
        first_failure_at: datetime | None = None,
        last_failure_at: datetime | None = None,
    ) -> DeadLetter:
        """The letter of a record that failed ``stage`` with ``error`` (failure times: now)."""
        now = utc_now()
        return cls(
            stage=stage,
            error_class=type(error).__name__,
            error_message=str(error)[:2000],
            attempts=attempts,
            first_failure_at=first_failure_at or now,
            last_failure_at=last_failure_at or now,
            original_topic=original_topic,
            original_partition=original_partition,
            original_offset=original_offset,
        )

    def without_value(self, value_bytes: int, why: str) -> DeadLetter:
        """This letter for a DLQ that cannot hold the original value (``value_omitted``)."""
        return self.model_copy(
            update={"value_omitted": f"the original, {value_bytes} bytes, is too large: {why}"}
        )

    def to_headers(self) -> list[tuple[str, bytes]]:
        fields = self.model_dump(mode="json", exclude={"original"}, exclude_none=True)
        return [(DLQ_HEADER_PREFIX + name, str(value).encode()) for name, value in fields.items()]

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]], original: Any) -> DeadLetter:
        fields: dict[str, Any] = {
            name.removeprefix(DLQ_HEADER_PREFIX): value.decode(errors="replace")
            for name, value in headers
            if name.startswith(DLQ_HEADER_PREFIX)
        }
        return cls(original=original, **fields)
