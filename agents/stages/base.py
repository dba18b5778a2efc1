"""What every stage handler shares: decoding its input, dead-lettering a failure.

A stage handler takes one Faust event (raw bytes in), does its stage's work with retries, and
either writes its output or dead-letters the record; it returns only when one of the two is on
Kafka, which is when :class:`agents.stages.runner.OrderedRunner` may ack it. A record that is
not valid JSON for its topic's model is dead-lettered too: bad input never stops a partition,
and its dead letter lists every problem of the record at once (one fix, one redrive).
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from agents.emit import dead_letter
from agents.outbound.retry import RetriesExhausted
from agents.resources import Resources
from schemas.config import HookstreamConfig
from schemas.errors import StageError
from schemas.events import CE_HEADER_PREFIX, RecordFacts, binary_mode_document, json_kind
from schemas.topics import Topics
from streams.logs import bind_event

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


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
    event = getattr(decoded, "event", decoded)  # an EnrichedEvent's or AIResult's CloudEvent
    bind_event(stage, event, getattr(decoded, "flow", None))
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


class Stage:
    name = ""

    def __init__(self, config: HookstreamConfig, resources: Resources) -> None:
        self.config = config
        self.resources = resources
        self.topics = Topics(config.kafka.topic_prefix)

    async def _fail(
        self, message: Any, error: BaseException, *, extra_headers: list[tuple[str, bytes]]
    ) -> BaseException:
        """Dead-letter ``message``; return the error its headers name (a retried operation's
        last one)."""
        extra_headers = [*binding_headers(message), *extra_headers]
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
