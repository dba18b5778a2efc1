"""Event search by key: the events of one partition key, newest first (links to journeys).

:func:`streams.ops.trace.find_journey` follows one event id; a key (a customer id, say) names
many events. The events topic is keyed by it, so only the key's partition is read — its newest
:data:`MAX_RECORDS_READ` records — and each event with that key is listed with a link to its
journey.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable
from schemas.topics import Topics
from streams.kafka.reader import Window, new_consumer, partitions_of, read_window
from streams.ops.trace import partition_for

MAX_RECORDS_READ = 20_000
MAX_LISTED = 100


@dataclass(frozen=True, slots=True)
class KeyedEvent:
    timestamp_ms: int
    event_id: str
    source: str
    type: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class KeySearch:
    events: list[KeyedEvent]  # newest first, at most MAX_LISTED
    partition: int
    read: int
    whole_partition: bool  # False: only the newest MAX_RECORDS_READ were read


async def events_by_key(settings: KafkaSettings, key: str) -> KeySearch:
    topic = Topics(settings.topic_prefix).events
    consumer = new_consumer(settings)
    wanted = key.encode()
    try:
        await consumer.start()
        tps = await partitions_of(consumer, topic)
        tp = TopicPartition(topic, partition_for(wanted, len(tps)))
        low, high = (
            (await consumer.beginning_offsets([tp]))[tp],
            (await consumer.end_offsets([tp]))[tp],
        )
        start = max(low, high - MAX_RECORDS_READ)
        found: list[KeyedEvent] = []
        read = 0
        async for batch in read_window(consumer, Window({tp: (start, high)})):
            read += len(batch)
            for record in batch:
                if record.key != wanted:
                    continue
                try:
                    value = orjson.loads(record.value or b"")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    found.append(
                        KeyedEvent(
                            record.timestamp,
                            str(value.get("id", "?")),
                            str(value.get("source", "?")),
                            str(value.get("type", "?")),
                            record.partition,
                            record.offset,
                        )
                    )
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot read {topic}: {exc}") from exc
    finally:
        await consumer.stop()
    found.reverse()
    return KeySearch(found[:MAX_LISTED], tp.partition, read, start == low)
