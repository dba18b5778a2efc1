"""The shared reader of a compacted topic and the one topic-creating function, on the real broker.

The reader (:mod:`streams.kafka.compacted`) serves both the worker's durable maps and the sinks'
delivered-memory; these tests pin what both rely on: a load returns only once every partition
is read to its end, tombstones reach the owner, the tail delivers later records, and a failed
start says which topic and leaves nothing running.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agents.state.durable_map import MAX_BATCHED_VALUE_BYTES, DurableMap, put_all
from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable, ConfigError
from streams.kafka.admin import create_topics
from streams.kafka.compacted import CompactedReader
from streams.kafka.producer import KafkaWriter
from tests.support.kafka import create_topic, read_all

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _write(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> int:
    """Write ``records`` (key, value; None is a tombstone) in order; return the last offset."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        offset = -1
        for key, value in records:
            written = await producer.send_and_wait(topic, value, key=key, partition=0)
            offset = written.offset
        return offset
    finally:
        await producer.stop()


class Recorded:
    """The owner's side: a dict kept like a memory keeps it (a tombstone drops the key)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def __call__(self, key: bytes | None, value: bytes | None) -> None:
        assert key is not None
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value


async def test_a_load_returns_once_every_partition_is_read_to_its_end(
    kafka_bootstrap: str,
) -> None:
    topic = await create_topic(kafka_bootstrap, "compacted", 3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(300):
            await producer.send(topic, b"v%d" % i, key=b"k%d" % i, partition=i % 3)
        await producer.flush()
    finally:
        await producer.stop()
    recorded = Recorded()
    reader = CompactedReader(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), topic, recorded, fetch_min_bytes=64 * 1024
    )
    await reader.start(load=True)
    try:
        # Read at once, before any await: what the load promised is already there.
        assert len(recorded.data) == 300
        assert recorded.data[b"k299"] == b"v299"
        assert reader.records_read == 300
        assert reader.partitions == [0, 1, 2]
    finally:
        await reader.stop()


async def test_a_tombstone_reaches_the_owner_and_the_tail_reads_on(kafka_bootstrap: str) -> None:
    topic = await create_topic(kafka_bootstrap, "compacted", 1)
    await _write(kafka_bootstrap, topic, [(b"gone", b"1"), (b"kept", b"2"), (b"gone", None)])
    recorded = Recorded()
    reader = CompactedReader(KafkaSettings(bootstrap_servers=kafka_bootstrap), topic, recorded)
    await reader.start(load=True)
    try:
        assert recorded.data == {b"kept": b"2"}
        # Written by someone else after the load: the tail brings it, and a wait for the
        # partition's new end returns once it is applied.
        last = await _write(kafka_bootstrap, topic, [(b"later", b"3"), (b"kept", None)])
        await reader.wait_for_position(0, last + 1)
        assert recorded.data == {b"later": b"3"}
    finally:
        await reader.stop()


async def test_a_durable_map_restarted_sees_the_tombstone_and_its_topic_is_compacted(
    kafka_bootstrap: str,
) -> None:
    topic = f"map-{uuid.uuid4().hex[:10]}"
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=2)
    first = DurableMap(settings, topic, ttl_s=3600, cleanup_interval_s=3600)
    await first.start()
    entry = orjson.dumps({"written_at": 1e10, "value": "answer"})
    try:
        for i in range(50):
            key = f"k{i}".encode()
            await _write(kafka_bootstrap, topic, [(key, entry)])
        await _write(kafka_bootstrap, topic, [(b"k7", None)])
    finally:
        await first.stop()
    second = DurableMap(settings, topic, ttl_s=3600, cleanup_interval_s=3600)
    await second.start()
    try:
        assert len(second) == 49
        assert second.get("k7") is None
        assert second.get("k49") == "answer"
    finally:
        await second.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    configs = {name: value for name, value, *_ in described[0].resources[0][4]}
    assert configs["cleanup.policy"] == "compact,delete"
    assert configs["retention.ms"] == "3600000"


async def test_put_all_writes_to_two_maps_at_once_and_a_restart_reads_both(
    kafka_bootstrap: str,
) -> None:
    """The AI stage's "done" mark and cache entry go to the producer together
    (agents.state.durable_map.put_all): both must be on Kafka when it returns, and in the local
    copies, as two puts in turn left them."""
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=2)
    topics = [f"map-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    maps = [DurableMap(settings, t, ttl_s=3600, cleanup_interval_s=3600) for t in topics]
    for one in maps:
        await one.start()
    try:
        async with KafkaWriter(settings) as writer:
            await put_all(writer, [(maps[0], "done/f/s/1", 1), (maps[1], "cache-key", {"a": 2})])
            assert maps[0].get("done/f/s/1") == 1
            assert maps[1].get("cache-key") == {"a": 2}
    finally:
        for one in maps:
            await one.stop()
    again = [DurableMap(settings, t, ttl_s=3600, cleanup_interval_s=3600) for t in topics]
    for one in again:
        await one.start()
    try:
        assert again[0].get("done/f/s/1") == 1
        assert again[1].get("cache-key") == {"a": 2}
        assert len(again[0]) == len(again[1]) == 1
    finally:
        for one in again:
            await one.stop()


async def test_a_topic_that_never_appears_fails_the_start_naming_it(kafka_bootstrap: str) -> None:
    topic = f"missing-{uuid.uuid4().hex[:10]}"
    reader = CompactedReader(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        topic,
        Recorded(),
        partitions_timeout_s=1.0,
    )
    with pytest.raises(BrokerUnavailable, match=topic):
        await reader.start(load=True)
    with pytest.raises(RuntimeError, match="not started"):
        await reader.wait_for_position(0, 1)


async def test_create_topics_creates_once_and_names_a_refused_topic(kafka_bootstrap: str) -> None:
    name = f"created-{uuid.uuid4().hex[:10]}"
    wanted = {name: {"cleanup.policy": "compact"}}
    assert await create_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), wanted, partitions=2
    ) == [name]
    assert (
        await create_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), wanted, partitions=2)
        == []
    )
    refused = f"refused-{uuid.uuid4().hex[:10]}"
    with pytest.raises(ConfigError, match=refused):
        await create_topics(
            KafkaSettings(bootstrap_servers=kafka_bootstrap),
            {refused: {"cleanup.policy": "bogus"}},
            partitions=1,
        )


async def test_marks_put_in_one_pass_share_one_record_and_a_restart_reads_them(
    kafka_bootstrap: str,
) -> None:
    """The AI stage's "done" marks, put by many events at once, go to Kafka as one record
    (agents.state.durable_map, issue 16): each put returns once that record is acknowledged,
    and a map loaded from the topic has every mark, not the record's own key."""
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=2)
    topic = f"map-{uuid.uuid4().hex[:10]}"
    keys = [f"done/f/s/{i}" for i in range(50)]
    durable = DurableMap(settings, topic, ttl_s=3600, cleanup_interval_s=3600)
    await durable.start()
    try:
        async with KafkaWriter(settings) as writer:
            await asyncio.gather(*(put_all(writer, [(durable, key, 1)]) for key in keys))
            assert all(durable.get(key) == 1 for key in keys)
            [record] = await read_all(kafka_bootstrap, topic)
    finally:
        await durable.stop()
    assert record.key is not None
    assert record.key.startswith(b"marks/")
    assert sorted(orjson.loads(record.value or b"")["marks"]) == sorted(keys)
    again = DurableMap(settings, topic, ttl_s=3600, cleanup_interval_s=3600)
    await again.start()
    try:
        assert all(again.get(key) == 1 for key in keys)
        assert len(again) == len(keys)
    finally:
        await again.stop()


async def test_values_put_in_one_pass_share_one_record_and_a_large_one_goes_alone(
    kafka_bootstrap: str,
) -> None:
    """Answer-cache entries join the batch records too (issue 16): many puts, one record, each
    value back after a restart; a value over MAX_BATCHED_VALUE_BYTES is a record of its own."""
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=2)
    topic = f"map-{uuid.uuid4().hex[:10]}"
    values = {f"cache-{i}": {"output": {"n": i}, "text": "é" * i} for i in range(40)}
    large = {"text": "x" * (MAX_BATCHED_VALUE_BYTES + 1)}
    durable = DurableMap(settings, topic, ttl_s=3600, cleanup_interval_s=3600)
    await durable.start()
    try:
        async with KafkaWriter(settings) as writer:
            puts = [put_all(writer, [(durable, key, value)]) for key, value in values.items()]
            await asyncio.gather(*puts, put_all(writer, [(durable, "large", large)]))
            records = await read_all(kafka_bootstrap, topic)
    finally:
        await durable.stop()
    keys = sorted(record.key or b"" for record in records)
    assert len(keys) == 2
    assert keys[0] == b"large"
    assert keys[1].startswith(b"marks/")
    again = DurableMap(settings, topic, ttl_s=3600, cleanup_interval_s=3600)
    await again.start()
    try:
        assert all(again.get(key) == value for key, value in values.items())
        assert again.get("large") == large
        assert len(again) == len(values) + 1
    finally:
        await again.stop()
