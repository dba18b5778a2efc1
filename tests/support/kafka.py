"""Topics in tests: made fresh, read back (every record, with headers, no consumer group)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.config import KafkaSettings
from streams.kafka.admin import create_topics
from streams.kafka.connection import client_kwargs

# A bootstrap address (a plaintext broker) or whole settings (TLS, SASL: the secured broker).
Kafka = str | KafkaSettings


def settings_of(kafka: Kafka) -> KafkaSettings:
    return kafka if isinstance(kafka, KafkaSettings) else KafkaSettings(bootstrap_servers=kafka)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int

    def json(self) -> Any:
        return orjson.loads(self.value or b"null")


async def read_all(bootstrap: Kafka, topic: str) -> list[Record]:
    """Every record currently on ``topic``, in partition/offset order."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings_of(bootstrap)),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Record] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batch.items():
                for m in messages:
                    records.append(
                        Record(
                            m.topic,
                            m.partition,
                            m.offset,
                            m.key,
                            m.value,
                            {k: v for k, v in m.headers},
                            m.timestamp,
                        )
                    )
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            # A transactional topic ends with a commit marker, which is never handed out.
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def wait_for_records(
    bootstrap: Kafka,
    topic: str,
    predicate: Callable[[list[Record]], bool],
    *,
    timeout_s: float = 60.0,
    poll_s: float = 0.5,
) -> list[Record]:
    """Poll ``topic`` until ``predicate(records)`` holds; raise TimeoutError with a summary."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        records = await read_all(bootstrap, topic)
        if predicate(records):
            return records
        if loop.time() > deadline:
            raise TimeoutError(f"{topic}: condition not met; {len(records)} records present")
        await asyncio.sleep(poll_s)


async def create_topic(
    bootstrap: Kafka, prefix: str, partitions: int, *, config: dict[str, str] | None = None
) -> str:
    """A new topic named ``<prefix>-<random>``, so that runs never share one."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    await create_topics(settings_of(bootstrap), {name: config or {}}, partitions=partitions)
    return name


async def delete_topics(bootstrap: Kafka, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings_of(bootstrap)))
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


async def committed_offsets(bootstrap: Kafka, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (absent partitions omitted)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings_of(bootstrap)))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
