"""What each topic accepts per write: its ``max.message.bytes``, learned when the broker refuses.

Why: a topic's ``max.message.bytes`` (Kafka's default ~1 MiB; operators lower it, clusters
differ) bounds each record batch, and the broker refuses a batch over it as a whole. Two things
then went wrong (issue 16's review): aiokafka's idempotent producer had already counted the
refused batch's sequence numbers, so its next write to that partition failed too (and the
producer was replaced: 503s for other senders); and a record over the limit was written again
and again (a stage's result: its partition stuck for good, breaking the producer each time).

So the batching writer (:mod:`streams.kafka.batch_writer`) learns the limit of a topic the
first time the broker refuses a batch of it as too large: it asks the broker (DescribeConfigs,
one request), and from then on builds that topic's batches under the limit and refuses a record
over it itself (:class:`~schemas.errors.RecordTooLarge`, with the topic and the limit), before
anything reaches the producer. Nothing is asked while no refusal comes: the common case pays
nothing. Where the broker does not answer (no ``DESCRIBE_CONFIGS`` permission on the topic),
the refusals themselves bound it: a lone record refused is over the limit, and so is any record
at least as large; a refused batch of several is cut to half its size the next time.

The refusal of a lone record here lasts :data:`LEARNED_FOR_S`: an operator who raises the
topic's limit (to redrive the dead letters of records that were too large) sees it taken within
that time, at the cost of one refusal by the broker per topic and period while too large records
keep coming. The batches stay under the learned size for the process's life (were it forgotten,
a topic whose limit is under a busy partition's batch would be refused again every period).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import DescribeConfigsRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from schemas.errors import RecordTooLarge

log = logging.getLogger(__name__)

# Kafka's record batch (v2) header, the 12 bytes of offset and length included: what the
# broker compares with max.message.bytes is this plus the records.
BATCH_HEADER_BYTES = 61
# The most a record adds to a batch besides its key, value and headers (attributes, offset and
# timestamp deltas, its length): aiokafka's own upper bound.
RECORD_OVERHEAD_MAX_BYTES = 21
_TOPIC_RESOURCE = 2  # DescribeConfigs' resource type for a topic
LEARNED_FOR_S = 60.0
_UNBOUNDED = sys.maxsize  # no lone record refused here (any more)


def _varint_bytes(value: int) -> int:
    """Bytes of Kafka's zigzag varint for a value >= 0."""
    encoded, size = value << 1, 1
    while encoded >= 0x80:
        encoded >>= 7
        size += 1
    return size


# max.message.bytes where neither the topic nor the broker sets it (Kafka's default).
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


def lone_record_bytes(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> int:
    """The exact size of a batch holding only this record (what the broker checks)."""
    body: int = 3 + DefaultRecordBatchBuilder.size_of(key, value, headers)  # attrs, two deltas
    return BATCH_HEADER_BYTES + _varint_bytes(body) + body


def record_bytes_max(key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> int:
    """The most this record adds to a batch."""
    size: int = DefaultRecordBatchBuilder.size_of(key, value, headers)
    return RECORD_OVERHEAD_MAX_BYTES + size


async def describe_max_message_bytes(client: Any, topic: str, timeout_s: float) -> int | None:
    """The topic's ``max.message.bytes`` as the broker states it, or None when it does not
    answer in ``timeout_s`` or refuses (no permission: the caller falls back on refusals)."""
    request = DescribeConfigsRequest([(_TOPIC_RESOURCE, topic, ["max.message.bytes"])])
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.send(client.get_random_node(), request)
        for error_code, _message, _type, _name, entries, *_ in response.resources:
            if error_code != 0:
                log.warning("cannot read max.message.bytes of %s: error %d", topic, error_code)
                return None
            for name, value, *_ in entries:
                if name == "max.message.bytes":
                    return int(value)
    except (KafkaError, TimeoutError, OSError, ValueError, TypeError) as exc:
        # Not answered, or not as expected: the refusals bound the limit instead. (Anything
        # raised here would stop the writer's rounds, and every write with them.)
        log.warning("cannot read max.message.bytes of %s: %s", topic, type(exc).__name__)
    return None


def fit_batches(producer: Any, limit: int | None) -> None:
    """Keep an aiokafka producer's batches within ``limit`` (a topic's max.message.bytes; None:
    unknown) when it is under their size, which the broker would refuse when full. aiokafka
    reads the size anew for each batch it starts."""
    accumulator = producer._message_accumulator  # aiokafka's: no public setter
    if limit is not None and limit < accumulator._batch_size:
        accumulator._batch_size = limit


class TopicSizeLimits:
    """What the refusals taught, per topic; empty until the first (the write path tests
    ``if limits.learned`` before asking :meth:`bounds`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # topic -> (bytes a batch of it may reach, a lone record this large is refused,
        # max.message.bytes as the broker stated it or None, learned at on ``clock``)
        self.learned: dict[str, tuple[int, int, int | None, float]] = {}
        self._clock = clock

    def bounds(self, topic: str) -> tuple[int, int] | None:
        """(largest batch to build, smallest lone record refused) for ``topic``, or None when
        nothing is known of it. The second lapses :data:`LEARNED_FOR_S` after the refusal
        that taught it (``sys.maxsize`` then: none refused here)."""
        known = self.learned.get(topic)
        if known is None:
            return None
        if known[1] != _UNBOUNDED and self._clock() - known[3] >= LEARNED_FOR_S:
            known = self.learned[topic] = (known[0], _UNBOUNDED, known[2], known[3])
        return known[0], known[1]

    def learn(self, topic: str, refused_bytes: int, records: int, stated: int | None) -> None:
        """A batch of ``records`` records and (at most) ``refused_bytes`` bytes was refused as
        too large; ``stated``: the topic's max.message.bytes as the broker answered, if it did.
        Both bounds only ever come down, each below the refused batch: the next try differs."""
        if stated is not None and stated < refused_bytes:
            batch_max, refused_from = stated, stated + 1
        elif records == 1:  # over the limit, whatever it is
            batch_max, refused_from = refused_bytes - 1, refused_bytes
            stated = None
        else:  # some batch under this one fits: half of it, then half again if need be
            batch_max, refused_from = refused_bytes // 2, refused_bytes
            stated = None
        known = self.bounds(topic)
        if known is not None:
            batch_max, refused_from = min(batch_max, known[0]), min(refused_from, known[1])
            stated = stated if stated is not None else self.learned[topic][2]
        self.learned[topic] = (batch_max, refused_from, stated, self._clock())
        log.warning(
            "Kafka refused a batch of %d bytes for %s as too large; its batches now hold at most "
            "%d bytes, and for %g s a record of %d bytes or more is refused here",
            refused_bytes,
            topic,
            batch_max,
            LEARNED_FOR_S,
            refused_from,
        )

    def check(
        self,
        topic: str,
        refused_from: int,
        key: bytes | None,
        value: bytes,
        headers: Sequence[tuple[str, bytes]],
    ) -> RecordTooLarge | None:
        """The error of a record whose lone batch reaches ``refused_from`` (``bounds``'s
        second), else None."""
        size = lone_record_bytes(key, value, headers)
        return self.refusal(topic, size) if size >= refused_from else None

    def refusal(self, topic: str, record_bytes: int) -> RecordTooLarge:
        """The error of a record of ``record_bytes`` (as a batch of its own) over the limit."""
        _, refused_from, stated, _ = self.learned[topic]
        limit = (
            f"its max.message.bytes is {stated}"
            if stated is not None
            else f"it refused {refused_from} bytes"
        )
        return RecordTooLarge(
            f"the record is {record_bytes} bytes, more than topic {topic} accepts ({limit})"
        )
