"""Writing a stage's output, and its dead letters, without ever giving up on an event.

An event is acked only after its output is on Kafka. If the broker is unavailable, waiting
and trying again is the only correct move: the event stays unacked (so uncommitted) and the
stage stops taking new work because its slots stay busy — backpressure, not loss.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from schemas.errors import BrokerUnavailable
from schemas.events import DeadLetter
from streams.kafka.producer import Headers, KafkaWriter

log = logging.getLogger(__name__)
_PAUSE_MAX_S = 10.0


async def emit(
    writer: KafkaWriter, topic: str, value: bytes, *, key: bytes | None, headers: Headers = ()
) -> None:
    """Send until acknowledged, pausing (up to 10 s) between attempts."""
    pause_s = 0.2
    while True:
        try:
            await writer.send(topic, value, key=key, headers=headers)
            return
        except BrokerUnavailable as exc:
            log.warning("cannot write to %s yet (%s); retrying in %.1f s", topic, exc, pause_s)
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
    now = datetime.now(UTC)
    letter = DeadLetter(
        stage=stage,
        error_class=type(error).__name__,
        error_message=str(error)[:2000],
        attempts=attempts,
        first_failure_at=first_failure_at or now,
        last_failure_at=last_failure_at or now,
        original_topic=message.topic,
        original_partition=message.partition,
        original_offset=message.offset,
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
    await emit(
        writer,
        dlq_topic,
        message.value,
        key=message.key,
        headers=[*letter.to_headers(), *extra_headers],
    )
    return letter
