"""Models of everything hookstream writes to a topic.

Every value is plain JSON (see :mod:`schemas.codec`), so any Kafka client in any language can
read it. The event envelope is a CloudEvents 1.0 structured-mode JSON document; hookstream's
own attributes are CloudEvents extension attributes (lower-case letters and digits only, as the
spec requires).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class CloudEvent(_Model):
    """One received webhook (or published event), as it sits on the events topic."""

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(description="Webhook id given by the sender, or a hash of the body.")
    source: str = Field(description="Name of the configured source that received it.")
    type: str = Field(description="Event type, e.g. 'ticket.created'.")
    time: datetime = Field(description="When hookstream accepted the event (UTC).")
    datacontenttype: str = "application/json"
    data: Any = Field(description="The webhook body, parsed JSON.")
    partitionkey: str = Field(description="Kafka key: events with the same key stay in order.")
    traceid: str = Field(description="Trace id, carried to every derived record.")
    webhookheaders: dict[str, str] = Field(
        default_factory=dict,
        description="A safe subset of the received HTTP headers (never signatures or auth).",
    )

    @property
    def event_key(self) -> str:
        """Identity of the event across sources: the basis of every idempotency key."""
        return f"{self.source}/{self.id}"


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
    output: dict[str, Any] = Field(description="The model's answer, valid for the flow's schema.")
    usage: TokenUsage = Field(default_factory=TokenUsage)
    latency_ms: float = Field(description="Wall time of the successful call.")
    attempts: int = Field(description="Calls made, including the successful one.")
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
    """What a sink delivered where; one per successful delivery."""

    flow: str
    sink: str
    event_key: str
    idempotency_key: str
    status: int
    attempts: int
    delivered_at: datetime = Field(default_factory=utc_now)


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
    original: Any = Field(default=None, description="The original value, parsed JSON.")

    def to_headers(self) -> list[tuple[str, bytes]]:
        fields = self.model_dump(mode="json", exclude={"original"})
        return [(DLQ_HEADER_PREFIX + name, str(value).encode()) for name, value in fields.items()]

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]], original: Any) -> DeadLetter:
        fields: dict[str, Any] = {
            name.removeprefix(DLQ_HEADER_PREFIX): value.decode(errors="replace")
            for name, value in headers
            if name.startswith(DLQ_HEADER_PREFIX)
        }
        return cls(original=original, **fields)
