"""Reading a compacted topic whole, from its beginning and on as it grows: a memory's source.

The worker's durable maps (:mod:`agents.state.durable_map`) and the sinks' delivered-memory
(:mod:`agents.state.delivered`) each keep a whole compacted topic in memory. Both read it the
same way, here: one consumer outside any group, assigned every partition, from the beginning;
each record goes to the owner's callback (a ``None`` value is a tombstone: the callback drops
the key); a tail task keeps reading, retrying after a failed fetch, until :meth:`stop`.

What differs between the two is configuration, not code: a map loads the topic to its end
before :meth:`CompactedReader.start` returns (its agents must not run on a half-loaded map),
the delivered-memory starts at once and catches up one partition at a time, up to an end it
reads through a client of its own (:meth:`CompactedReader.wait_for_position`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable
from streams.kafka.connection import client_kwargs

log = logging.getLogger(__name__)
OnRecord = Callable[[bytes | None, bytes | None], None]
IsolationLevel = Literal["read_committed", "read_uncommitted"]
# How long one tail read waits for records before reading again (an idle topic's pace).
_TAIL_POLL_MS = 500
# A failed fetch is retried after this long, not at once in a loop.
_RETRY_AFTER_S = 1.0
# A caught-up check re-reads the position this often even without a read's wake-up.
_RECHECK_S = 5.0


class CompactedReader:
    """One compacted topic, read from its beginning into ``on_record(key, value)``.

    ``fetch_min_bytes`` / ``fetch_max_wait_ms`` shape the tail's fetches (the broker answers
    once it has that many bytes, or after that long); ``client_id`` names the consumer in the
    broker's logs and quotas.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        on_record: OnRecord,
        *,
        client_id: str | None = None,
        isolation_level: IsolationLevel = "read_uncommitted",
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int = 500,
        partitions_timeout_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self._on_record = on_record
        self._client_id = client_id
        self._isolation_level: IsolationLevel = isolation_level
        self._fetch_min_bytes = fetch_min_bytes
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._partitions_timeout_s = partitions_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._tail: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()
        self.partitions: list[int] = []
        self.records_read = 0

    async def start(self, *, load: bool) -> None:
        """Assign every partition from its beginning and start the tail.

        With ``load``, return only once every partition is read up to the end it had when
        the reader started. Failures (the broker unreachable, the topic's partitions not
        known within ``partitions_timeout_s``) raise :class:`BrokerUnavailable` and leave
        nothing running; so does cancellation.
        """
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings),
            client_id=self._client_id or f"{self.topic}-reader",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=self._isolation_level,
            fetch_min_bytes=self._fetch_min_bytes,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        try:
            await consumer.start()
            partitions = sorted(await self._wait_for_partitions(consumer))
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            # Read before the tail's first fetch, which this request would queue behind.
            ends = await consumer.end_offsets(tps) if load else {}
        except BaseException as exc:  # cancelled too: the consumer may not be left running
            await stop_quietly(consumer, f"the reader of {self.topic}")
            if isinstance(exc, KafkaError | TimeoutError):
                raise BrokerUnavailable(f"cannot read {self.topic}: {exc}") from exc
            raise
        self.partitions = partitions
        self._consumer = consumer
        self._tail = asyncio.create_task(self._read_forever(consumer), name=f"tail {self.topic}")
        if not load:
            return
        try:
            for tp, end in ends.items():
                await self.wait_for_position(tp.partition, end)
        except BaseException:
            await self.stop()
            raise

    async def _wait_for_partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        async with asyncio.timeout(self._partitions_timeout_s):
            while True:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(self.topic)
                if partitions:
                    return set(partitions)
                await asyncio.sleep(0.5)

    async def _read_forever(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=_TAIL_POLL_MS)
            except KafkaError as exc:
                log.warning("%s: reading failed (%s); retrying", self.topic, exc)
                await asyncio.sleep(_RETRY_AFTER_S)
                continue
            for messages in batches.values():
                for message in messages:
                    self._on_record(message.key, message.value)
                self.records_read += len(messages)
            # Every read, records or not, may have moved a position (past a transaction's
            # marker, say): whoever waits on one looks again.
            self._progress.set()
            self._progress = asyncio.Event()

    async def wait_for_position(self, partition: int, end: int) -> None:
        """Return once the tail has read ``partition`` up to offset ``end``.

        The tail's position, not the offset after the last record it read: a partition
        emptied by retention (log start = end) has no record to read up to its end.
        """
        consumer, tail = self._consumer, self._tail
        if consumer is None or tail is None:
            raise RuntimeError(f"the reader of {self.topic} is not started")
        tp = TopicPartition(self.topic, partition)
        while True:
            progress = self._progress  # before the position: no read in between is missed
            if await consumer.position(tp) >= end:
                return
            if tail.done():  # stopped, or a callback raised: no read will come
                cause = None if tail.cancelled() else tail.exception()
                raise RuntimeError(f"the reader of {self.topic} stopped") from cause
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), _RECHECK_S)

    async def stop(self) -> None:
        """Stop the tail and close the consumer; safe to call twice, or after a failed start."""
        tail, consumer = self._tail, self._consumer
        self._tail = self._consumer = None
        if tail is not None:
            tail.cancel()
            try:
                await tail
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("the reader of %s had stopped on an error", self.topic)
        if consumer is not None:
            await stop_quietly(consumer, f"the reader of {self.topic}")


async def stop_quietly(consumer: AIOKafkaConsumer, what: str) -> None:
    """Stop ``consumer``; a failure is logged, so that whoever stops more than it goes on."""
    try:
        await consumer.stop()
    except Exception:
        log.exception("stopping %s failed", what)
