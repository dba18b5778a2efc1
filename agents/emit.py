"""Writing a stage's output, and its dead letters, without ever giving up on an event.

An event is acked only after its output is on Kafka. If the broker is unavailable, waiting
and trying again is the only correct move: the event stays unacked (so uncommitted) and the
stage stops taking new work because its slots stay busy — backpressure, not loss.

The one refusal not waited out is a record over what its topic accepts (RecordTooLarge: its
``max.message.bytes``, or Kafka's 1 MiB request): the same bytes would be refused forever and
the partition would wait behind them. It reaches the stage, which dead-letters the event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from agents import metrics
from schemas.errors import BrokerUnavailable, RecordTooLarge
from schemas.events import DeadLetter
from streams.kafka.producer import Headers, KafkaWriter, PendingWrite

log = logging.getLogger(__name__)
_PAUSE_MAX_S = 10.0


async def emit(
    writer: KafkaWriter, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()
) -> None:
    """Write until acknowledged, never adding a copy while an earlier one may still land.

    A write that missed its deadline is still held by the idempotent producer, which retries
    it (same sequence numbers, so the broker keeps one copy) until the broker is back: writing
    the record again then would put it on Kafka twice (before: up to 8 copies of one result in
    an 18 s outage). So a timeout only means waiting again on the same write; the record is
    written anew only once the producer gave that write up (see ``PendingWrite``), pausing up
    to 10 s between such attempts.
    """
    await _settle(writer, Record(topic, value, key, headers), None)


class Record(NamedTuple):
    """One record for :func:`emit_all`."""

    topic: str
    value: bytes
    key: bytes | None
    headers: Headers = ()


async def emit_all(writer: KafkaWriter, records: Sequence[Record]) -> None:
    """:func:`emit` for several records at once: all are handed to the producer first, then
    their acks are awaited, so they share the producer's batches and one round trip instead
    of one round trip each (issue 16). Only for records whose order does not matter: any of
    them may land before the others."""
    pending: list[PendingWrite | None] = []
    for record in records:
        try:
            pending.append(
                await writer.write(
                    record.topic, record.value, key=record.key, headers=record.headers
                )
            )
        except BrokerUnavailable:
            pending.append(None)  # not taken: _settle writes it again
    for record, write in zip(records, pending, strict=True):
        await _settle(writer, record, write)


async def _settle(writer: KafkaWriter, record: Record, pending: PendingWrite | None) -> None:
    """Wait on ``pending`` — or, when None, write ``record`` — until Kafka acknowledged it
    (see :func:`emit`)."""
    pause_s = 0.2
    while True:
        try:
            if pending is None:
                pending = await writer.write(
                    record.topic, record.value, key=record.key, headers=record.headers
                )
            await writer.outcome(pending)
            return
        except BrokerUnavailable as exc:
            if pending is not None and not pending.given_up:
                log.warning(
                    "waiting for Kafka to acknowledge a write to %s (%s)", record.topic, exc
                )
                continue
            pending = None
            log.warning(
                "cannot write to %s yet (%s); retrying in %.1f s", record.topic, exc, pause_s
            )
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, _PAUSE_MAX_S)


async def dead_letter(
    writer: KafkaWriter,
    dlq_topic: str,
    message: Any,
    *,
    stage: str,
    error: BaseException,
    attempts: int,
    first_failure_at: datetime | None = None,
    last_failure_at: datetime | None = None,
    extra_headers: Headers = (),
) -> DeadLetter:
    """Put the original record on the DLQ, byte for byte, with its error as headers.

    ``message`` is the Faust message (``event.message``) the stage failed on.
    """
    letter = DeadLetter.of(
        error,
        stage=stage,
        original_topic=message.topic,
        original_partition=message.partition,
        original_offset=message.offset,
        attempts=attempts,
        first_failure_at=first_failure_at,
        last_failure_at=last_failure_at,
    )
    log.warning(
        "dead-lettering %s[%d]@%d at stage %s: %s: %s",
        message.topic,
        message.partition,
        message.offset,
        stage,
        letter.error_class,
        letter.error_message,
    )
    try:
        await emit(
            writer,
            dlq_topic,
            message.value,
            key=message.key,
            headers=[*letter.to_headers(), *extra_headers],
        )
    except RecordTooLarge as exc:
        # The DLQ takes less than the stage's input did: the letter goes without the value
        # (else the event could neither be handled nor dead-lettered, and its partition would
        # wait behind it for good). The original stays at its coordinates, where a redrive
        # reads it (streams/ops/dlq.py) while the topic's retention keeps it.
        letter = letter.without_value(len(message.value or b""), str(exc))
        log.warning(
            "dead letter of %s[%d]@%d without its value: %s",
            message.topic,
            message.partition,
            message.offset,
            letter.value_omitted,
        )
        await emit(
            writer,
            dlq_topic,
            b"",
            key=message.key,
            headers=[*letter.to_headers(), *extra_headers],
        )
    metrics.DEAD_LETTERS.labels(stage, letter.error_class).inc()
    return letter
