"""What the sinks delivered, remembered durably and shared by every sink worker.

Each successful delivery is written — after the target accepted it and before the result is
acked — to the compacted topic ``<prefix>.delivered``, keyed by its idempotency key, with the
receipt as value. Before delivering, a sink asks :meth:`DeliveredMemory.outcome`: a result
redelivered after a crash or a rebalance (at-least-once inside) is then skipped instead of being
sent again (effectively once outside).

Every sink process tails the whole topic into a map of keys to outcomes. A check first makes
sure this process has read the key's partition up to its current end (one ListOffsets request),
so a delivery made a moment ago by another worker — the partition's previous owner — is seen
too. That request goes through a client of its own: a broker answers one connection's requests
in order, and on the tail's connection it waited behind the tail's long-polling fetch, up to
the fetch's maximum wait (500 ms) before each first delivery of a result. A key lands on the
partition Kafka's default partitioner picks for it (murmur2), which is how the check knows
which partition to catch up on.

The topic is compacted with a retention of a week (``schemas.topics.TOPIC_CONFIGS``): a result
redelivered more than a week later would be sent again, with the same Idempotency-Key.

It also remembers what a sink dead-lettered (a value starting ``{"dead_lettered":``): a result
redelivered after a crash that came between its dead letter and its ack is then skipped, not
tried and dead-lettered a second time. A later delivery (after a redrive) overwrites that
entry with its receipt, compaction keeping the latest.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from agents.emit import emit
from agents.refcount import RefCounted
from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable
from streams.kafka.compacted import CompactedReader, stop_quietly
from streams.kafka.connection import client_kwargs
from streams.kafka.producer import KafkaWriter

log = logging.getLogger(__name__)
Outcome = Literal["delivered", "dead_lettered"]
DELIVERED: Outcome = "delivered"
DEAD_LETTERED: Outcome = "dead_lettered"
_DEAD_LETTER_MARK = b'{"dead_lettered":'
_ENDS_CLIENT = "the delivered-memory's end-offsets client"


def _outcome(value: bytes | None) -> Outcome:
    return DEAD_LETTERED if value is not None and value.startswith(_DEAD_LETTER_MARK) else DELIVERED


class DeliveredMemory(RefCounted):
    """Ref-counted async context manager: the first user starts the tail, the last stops it."""

    def __init__(
        self, settings: KafkaSettings, topic: str, *, tail_fetch_max_wait_ms: int = 500
    ) -> None:
        super().__init__()
        self.settings = settings
        self.topic = topic
        self.tail_fetch_max_wait_ms = tail_fetch_max_wait_ms
        self._outcomes: dict[bytes, Outcome] = {}
        self._reader: CompactedReader | None = None
        self._ends: AIOKafkaConsumer | None = None  # ListOffsets only (see the module doc)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is not None:
            self._outcomes[key] = _outcome(value)

    async def _start(self) -> None:
        reader = CompactedReader(
            self.settings,
            self.topic,
            self._apply,
            client_id=f"{self.topic}-memory",
            fetch_max_wait_ms=self.tail_fetch_max_wait_ms,
        )
        ends = AIOKafkaConsumer(
            **client_kwargs(self.settings),
            enable_auto_commit=False,
            client_id=f"{self.topic}-memory-ends",
        )
        try:
            await ends.start()
            # Not loaded to the end: each check catches up on its key's partition.
            await reader.start(load=False)
        except BaseException as exc:  # cancelled too: neither client may be left running
            await stop_quietly(ends, _ENDS_CLIENT)
            if isinstance(exc, KafkaError | TimeoutError):
                raise BrokerUnavailable(f"cannot read {self.topic}: {exc}") from exc
            raise
        self._reader, self._ends = reader, ends

    async def _stop(self) -> None:
        reader, ends = self._reader, self._ends
        self._reader = self._ends = None
        if reader is not None:
            await reader.stop()
        if ends is not None:
            await stop_quietly(ends, _ENDS_CLIENT)

    def partition_for(self, key: bytes) -> int:
        partitions = self._reader.partitions if self._reader is not None else []
        return int(DefaultPartitioner()(key, partitions, partitions))

    async def outcome(self, key: str, *, fresh: bool = False) -> Outcome | None:
        """What became of ``key``: delivered, dead-lettered, or nothing yet (None).

        A delivery is final and answered from memory; otherwise the key's partition is read
        up to its current end first, unless ``fresh`` is false and a dead letter is already
        known (a redelivered record need not know whether a redrive has delivered it since).
        """
        raw = key.encode()
        known = self._outcomes.get(raw)
        if known == DELIVERED or (known is not None and not fresh):
            return known
        await self._catch_up(self.partition_for(raw))
        return self._outcomes.get(raw)

    async def _catch_up(self, partition: int) -> None:
        reader, ends = self._reader, self._ends
        if reader is None or ends is None:
            raise RuntimeError("DeliveredMemory used outside `async with`")
        tp = TopicPartition(self.topic, partition)
        while True:
            try:
                end = (await ends.end_offsets([tp]))[tp]
                break
            except KafkaError as exc:
                log.warning("cannot read the end of %s (%s); retrying", tp, exc)
                await asyncio.sleep(1.0)
        await reader.wait_for_position(partition, end)

    async def remember(self, writer: KafkaWriter, key: str, receipt: bytes) -> None:
        """Record a delivery durably (acks=all); returns once Kafka has it."""
        raw = key.encode()
        await emit(writer, self.topic, receipt, key=raw)
        self._outcomes[raw] = DELIVERED

    async def remember_dead_letter(self, writer: KafkaWriter, key: str, error: str) -> None:
        """Record that ``key`` went to the DLQ (``error``: its class), once the DLQ has it."""
        raw = key.encode()
        value = orjson.dumps({"dead_lettered": True, "error": error})
        await emit(writer, self.topic, value, key=raw)
        self._outcomes[raw] = DEAD_LETTERED

    def __len__(self) -> int:
        return len(self._outcomes)
