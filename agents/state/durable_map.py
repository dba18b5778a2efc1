"""A dict that survives restarts and is shared by every worker: a compacted Kafka topic.

Used for the worker's two memories: event ids already processed (dedupe) and model answers
(the AI cache). Why not a Faust table:

- a Faust table is partitioned like its source topic and each worker holds only the
  partitions it is assigned, but an identical prompt can come from any key on any partition,
  so the cache must be readable whole by every worker; Faust's ``GlobalTable`` is the tool for
  that, and it is where Faust's recovery bugs cluster (hangs at start, faust #21, #74);
- Faust derives a table write's changelog partition from the ``current_event`` context
  variable and writes it with ``send_soon`` (buffered, not awaited); with events handled in
  their own tasks by :class:`~agents.stages.runner.OrderedRunner`, we want every write awaited with
  ``acks=all`` before the event is acked, and its partition chosen by its own key.

So each map is one topic with ``cleanup.policy=compact,delete`` (compaction keeps the latest
value per key; ``retention.ms`` = the TTL drops old segments). :meth:`DurableMap.start` reads
the topic to its end before returning, so a worker's agents never run with a half-loaded map
(what Faust's recovery does for tables); a tail task then keeps reading, so entries written by
other workers arrive within moments. :meth:`put` writes through: the local copy changes only
once Kafka has the record. Entries older than the TTL are ignored on read and dropped from
memory by a periodic cleanup.

Every worker holds the whole map in memory: about (key + value) bytes per entry for one TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from agents.emit import emit
from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable
from streams.kafka.producer import KafkaWriter

log = logging.getLogger(__name__)
Clock = Callable[[], float]
_LOAD_POLL_MS = 500
# The tail reads every entry the workers write (two per AI result): left at aiokafka's
# defaults (fetch_min_bytes=1) the broker answers each fetch with the few records written
# since the last one, hundreds of fetches a second whose per-request cost was a tenth of the
# worker's CPU at 600 events/s. Asking for 64 KiB or 100 ms, whichever comes first, batches
# them; other workers' entries still arrive within a tenth of a second.
_TAIL_FETCH_MIN_BYTES = 64 * 1024
_TAIL_FETCH_MAX_WAIT_MS = 100


class DurableMap:
    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        ttl_s: float,
        cleanup_interval_s: float,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.ttl_s = ttl_s
        self.cleanup_interval_s = cleanup_interval_s
        self._clock = clock
        self._data: dict[str, tuple[float, Any]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.loaded_records = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Any | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        written_at, value = entry
        if self._clock() - written_at > self.ttl_s:
            return None
        return value

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    async def put(self, writer: KafkaWriter, key: str, value: Any) -> None:
        """Write ``key`` → ``value`` (JSON) to Kafka, then to the local copy."""
        written_at = self._clock()
        record = orjson.dumps({"written_at": written_at, "value": value})
        await emit(writer, self.topic, record, key=key.encode())
        self._data[key] = (written_at, value)

    def remember(self, key: str, value: Any) -> None:
        """Set ``key`` locally only: for facts already durable elsewhere (agents.state.recovery)."""
        self._data[key] = (self._clock(), value)

    def cleanup(self) -> int:
        """Forget expired entries; returns how many."""
        horizon = self._clock() - self.ttl_s
        expired = [key for key, (written_at, _) in self._data.items() if written_at < horizon]
        for key in expired:
            del self._data[key]
        return len(expired)

    def _apply(self, key: bytes | None, raw: bytes | None) -> None:
        if key is None:
            return
        name = key.decode(errors="replace")
        if raw is None:
            self._data.pop(name, None)
            return
        try:
            record = orjson.loads(raw)
            entry = (float(record["written_at"]), record["value"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("%s: ignoring a record that is not a map entry (key %r)", self.topic, name)
            return
        current = self._data.get(name)
        if current is None or current[0] <= entry[0]:
            self._data[name] = entry

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap_servers)
        try:
            await admin.start()
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot reach Kafka: {exc}") from exc
        try:
            if self.topic in set(await admin.list_topics()):
                return
            retention_ms = int(self.ttl_s * 1000)
            configs = {
                "cleanup.policy": "compact,delete",
                "retention.ms": str(retention_ms),
                # Segments roll often enough for retention and compaction to act.
                "segment.ms": str(max(60_000, min(retention_ms // 10, 86_400_000))),
            }
            topic = NewTopic(
                name=self.topic,
                num_partitions=self.settings.partitions,
                replication_factor=self.settings.replication_factor,
                topic_configs=configs,
            )
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
        finally:
            await admin.close()

    async def start(self) -> None:
        """Create the topic if needed and load it to its current end; then keep tailing."""
        started = time.monotonic()
        await self._ensure_topic()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_min_bytes=_TAIL_FETCH_MIN_BYTES,
            fetch_max_wait_ms=_TAIL_FETCH_MAX_WAIT_MS,
        )
        await consumer.start()
        self._consumer = consumer
        partitions = consumer.partitions_for_topic(self.topic)
        while not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self.topic)
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        behind = {tp for tp in tps if ends[tp] > 0}
        while behind:
            batch = await consumer.getmany(*behind, timeout_ms=_LOAD_POLL_MS)
            for messages in batch.values():
                for message in messages:
                    self._apply(message.key, message.value)
                    self.loaded_records += 1
            for tp in list(behind):
                if await consumer.position(tp) >= ends[tp]:
                    behind.discard(tp)
        self.cleanup()
        log.info(
            "%s: loaded %d records (%d live entries) in %.2f s",
            self.topic,
            self.loaded_records,
            len(self._data),
            time.monotonic() - started,
        )
        self._tasks = [
            asyncio.create_task(self._tail(consumer), name=f"tail {self.topic}"),
            asyncio.create_task(self._cleanup_loop(), name=f"cleanup {self.topic}"),
        ]

    async def _tail(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                log.warning("%s: tail read failed (%s); retrying", self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            for messages in batch.values():
                for message in messages:
                    self._apply(message.key, message.value)

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval_s)
            expired = self.cleanup()
            if expired:
                log.info("%s: forgot %d expired entries", self.topic, expired)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
