"""What every stage handler shares: decoding its input, dead-lettering a failure.

A stage handler takes one Faust event (raw bytes in), does its stage's work with retries, and
either writes its output or dead-letters the record; it returns only when one of the two is on
Kafka, which is when :class:`agents.stages.runner.OrderedRunner` may ack it. A record that is
not valid JSON for its topic's model is dead-lettered too: bad input never stops a partition,
and its dead letter lists every problem of the record at once (one fix, one redrive).

Each handler runs in its record's trace (:func:`traced`): the context of the record's
``traceparent`` header (or of its event's ``traceid``, :mod:`schemas.tracecontext`) is current
while it runs, inside a ``process <topic>`` span when spans are on, so the records it writes
(:func:`schemas.headers.carried_headers`), its dead letters and its outgoing requests carry it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from agents.emit import dead_letter
from agents.outbound.retry import RetriesExhausted
from agents.resources import Resources
from schemas import tracecontext
from schemas.config import HookstreamConfig
from schemas.errors import StageError
from schemas.events import CE_HEADER_PREFIX, RecordFacts, binary_mode_document, json_kind
from schemas.headers import trace_headers
from schemas.topics import Topics
from streams.logs import bind_event
from streams.metrics import tracing

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
S = TypeVar("S", bound="Stage")
P = ParamSpec("P")


class InvalidRecord(StageError):
    """A record on a hookstream topic is not what that topic holds; never retriable."""


def decode(model: type[M], raw: bytes | None, *, stage: str, message: Any = None) -> M:
    """The record's value as ``model``, or InvalidRecord listing every problem with its field.

    With ``message`` (the Faust message, for the events topic), a binary-mode CloudEvent
    (``ce_*`` headers) is read from its headers, and attributes a producer may omit are taken
    from the record (:class:`schemas.events.RecordFacts`).
    """
    context = None
    try:
        if message is None:
            document = orjson.loads(raw or b"")
        else:
            headers = header_pairs(message)
            document = binary_mode_document(raw, headers)
            if document is None:
                document = orjson.loads(raw or b"")
            context = {"record": record_facts(message, headers)}
        decoded = model.model_validate(document, context=context)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"value is not JSON: {exc}", stage=stage) from None
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        listed = "; ".join(_problem(error) for error in errors)
        count = f"{len(errors)} problems" if len(errors) > 1 else "1 problem"
        raise InvalidRecord(
            f"value is not a {model.__name__} ({count}): {listed}", stage=stage
        ) from None
    except ValueError as exc:  # a binary-mode record's headers or data (binary_mode_document)
        raise InvalidRecord(f"binary-mode CloudEvent: {exc}", stage=stage) from None
    # The handler's log lines from here on carry the event's ids (streams.logs).
    # An EnrichedEvent's or AIResult's CloudEvent, or the CloudEvent itself (asked of the
    # type: getattr on a pydantic model without the field raises inside, issue 16).
    fields = type(decoded).model_fields
    event: Any = decoded.event if "event" in fields else decoded  # type: ignore[attr-defined]
    flow = decoded.flow if "flow" in fields else None  # type: ignore[attr-defined]
    bind_event(stage, event, flow)
    if tracing.enabled():
        named = {"hookstream.event_id": event.id, "hookstream.source": event.source}
        tracing.set_attributes(named if flow is None else {**named, "hookstream.flow": flow})
    return decoded


def _problem(error: ErrorDetails) -> str:
    """``field.path: message (got <type>)``: where, what, and what was there instead."""
    where = ".".join(str(p) for p in error["loc"]) or "(value)"
    if error["type"] == "missing":
        return f"{where}: {error['msg']}"
    return f"{where}: {error['msg']} (got {json_kind(error.get('input'))})"


def header_pairs(message: Any) -> list[tuple[str, bytes]]:
    """A Faust/aiokafka message's headers as (name, bytes) pairs (Faust may give a dict)."""
    headers = getattr(message, "headers", None) or ()
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(name, bytes(value or b"")) for name, value in pairs]


def record_facts(message: Any, headers: list[tuple[str, bytes]]) -> RecordFacts:
    """Key, timestamp and ``traceparent`` of the record (Faust's timestamp is in seconds)."""
    timestamp_s = getattr(message, "timestamp", None)
    traceparent = next((v for k, v in headers if k.lower() == "traceparent"), None)
    return RecordFacts(
        key=getattr(message, "key", None),
        timestamp_ms=None if timestamp_s is None else round(timestamp_s * 1000),
        traceparent=traceparent,
    )


def binding_headers(message: Any) -> list[tuple[str, bytes]]:
    """The record's CloudEvents binary-mode headers (``ce_*``, ``content-type``): a dead letter
    keeps them, or its redrive would lose the event's attributes."""
    return [
        (name, value)
        for name, value in header_pairs(message)
        if name.lower().startswith(CE_HEADER_PREFIX) or name.lower() == "content-type"
    ]


def record_trace(message: Any) -> tracecontext.TraceContext:
    """The trace a record belongs to: its ``traceparent`` header; else its event's
    ``traceid`` (a CloudEvent's, or the ``event`` of an enriched record or a result), read from
    the value; else a hash of the event's ``source/id`` (what the CloudEvent fills in). A record
    without the header is parsed twice for it (another producer's, or an old one)."""
    headers = getattr(message, "headers", None) or ()
    found = tracecontext.from_headers(headers.items() if isinstance(headers, dict) else headers)
    if found is not None:
        return found
    pairs = header_pairs(message)
    try:
        document = binary_mode_document(message.value, pairs)
        if document is None:
            document = orjson.loads(message.value or b"")
    except (ValueError, orjson.JSONDecodeError):
        document = None
    event = document.get("event", document) if isinstance(document, dict) else None
    if isinstance(event, dict):
        given = event.get("traceid")
        if isinstance(given, str) and given:
            return tracecontext.for_trace_id(tracecontext.trace_id_of(given))
        source, event_id = event.get("source"), event.get("id")
        if isinstance(source, str) and isinstance(event_id, str):
            return tracecontext.for_trace_id(tracecontext.derived_trace_id(source, event_id))
    return tracecontext.new_trace()


def _span_attributes(stage: Stage, message: Any) -> dict[str, str | int]:
    """A stage span's attributes (OpenTelemetry's messaging conventions, and ours)."""
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": str(message.topic),
        "messaging.destination.partition.id": str(message.partition),
        "messaging.kafka.offset": int(message.offset),
        **stage.span_attributes(),
    }


def traced(
    handle: Callable[Concatenate[S, Any, P], Coroutine[Any, Any, None]],
) -> Callable[Concatenate[S, Any, P], Coroutine[Any, Any, None]]:
    """Run a stage's handler of ``event`` (a Faust event) in its record's trace
    (:func:`record_trace`), inside a ``process <topic>`` span (kind consumer, a child of the
    record's context) when spans are on."""

    @functools.wraps(handle)
    async def in_trace(stage: S, event: Any, /, *args: P.args, **kwargs: P.kwargs) -> None:
        message = event.message
        try:
            context = record_trace(message)
        except Exception:  # a bug here must not stop the partition: the event goes on untraced
            log.exception("reading the trace context of %s failed; a new trace", message.topic)
            context = tracecontext.new_trace()
        token = tracecontext.activate(context)
        try:
            if not tracing.enabled():
                await handle(stage, event, *args, **kwargs)
                return
            attributes = _span_attributes(stage, message)
            with tracing.span(f"process {message.topic}", kind="consumer", attributes=attributes):
                await handle(stage, event, *args, **kwargs)
        finally:
            tracecontext.restore(token)

    return in_trace


class Stage:
    name = ""

    def __init__(self, config: HookstreamConfig, resources: Resources) -> None:
        self.config = config
        self.resources = resources
        self.topics = Topics(config.kafka.topic_prefix)

    def span_attributes(self) -> dict[str, str]:
        """What this stage's spans say of it, beside the record's place."""
        return {"hookstream.stage": self.name}

    async def _fail(
        self, message: Any, error: BaseException, *, extra_headers: list[tuple[str, bytes]]
    ) -> BaseException:
        """Dead-letter ``message``; return the error its headers name (a retried operation's
        last one). The dead letter carries the trace context, which a redrive copies."""
        extra_headers = [*binding_headers(message), *trace_headers(message), *extra_headers]
        if isinstance(error, RetriesExhausted):
            await dead_letter(
                self.resources.writer,
                self.topics.dlq,
                message,
                stage=self.name,
                error=error.last,
                attempts=error.attempts,
                first_failure_at=error.first_failure_at,
                last_failure_at=error.last_failure_at,
                extra_headers=extra_headers,
            )
            return error.last
        await dead_letter(
            self.resources.writer,
            self.topics.dlq,
            message,
            stage=self.name,
            error=error,
            attempts=1,
            extra_headers=extra_headers,
        )
        return error
