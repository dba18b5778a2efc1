"""The sink worker's wiring and its consumer's bookkeeping (agents.sinks.consumer), without a
broker: what is committable, what a rebalance does to the delivered-memory, backpressure."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from agents.resources import Resources
from agents.sinks.consumer import BUFFER_RECORDS, SinkConsumer
from agents.sinks.wiring import sink_consumer
from schemas.config_loader import load_config
from tests.unit.schemas.test_config_loader import EXAMPLE, EXAMPLE_ENV

TP = TopicPartition("results", 3)


def _consumer() -> SinkConsumer:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    return sink_consumer(config, Resources(config, client_id="unit"))


def _polled(offsets: range) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    records = [
        ConsumerRecord(TP.topic, TP.partition, o, 1_000, 0, b"k", b"v", None, 1, 1, ())
        for o in offsets
    ]
    return {TP: records}


async def test_the_sink_workers_memory_is_told_of_each_assignment() -> None:
    consumer = _consumer()
    assert len(consumer.stages) == 2  # the example: two flows, one sink each
    memory = consumer.memory
    assert all(stage.memory is memory for stage in consumer.stages)  # one per process
    assert memory.per_assignment
    before = memory._assignment
    await consumer.on_partitions_assigned({TP})
    await consumer.on_partitions_assigned({TP})
    assert memory._assignment == before + 2
    assert consumer.group_id.endswith("-sinks")  # the group the Faust agents used


async def test_a_record_is_committable_once_every_sink_acked_it() -> None:
    consumer = _consumer()
    await consumer.on_partitions_assigned({TP})
    consumer._enqueue(None, _polled(range(10, 12)))
    first, second = consumer._queues
    assert [r.offset for r in first] == [r.offset for r in second] == [10, 11]
    assert first[0].message is first[0]
    assert first[0].timestamp == 1.0
    first[0].ack()
    first[1].ack()
    assert TP not in consumer._done  # the other sink has done nothing yet
    second[0].ack()
    assert consumer._done[TP] == 11  # the offset after the last record done by both
    assert not second[0].ack()  # a second ack changes nothing
    await consumer.on_partitions_assigned({TP})  # a rebalance in between
    second[1].ack()  # an ack of the earlier assignment's record: not committed
    assert consumer._done[TP] == 11


async def test_a_full_queue_asks_for_a_pause_and_draining_it_for_the_resume() -> None:
    consumer = _consumer()
    await consumer.on_partitions_assigned({TP})
    consumer._enqueue(None, _polled(range(BUFFER_RECORDS)))
    assert consumer._full()
    consumer._paused = True  # what _fetch does when it finds the queues full
    feeds = [consumer._feed(i).__aiter__() for i in range(len(consumer.stages))]
    for _ in range(BUFFER_RECORDS // 2 + 1):
        for feed in feeds:
            await feed.__anext__()
    assert not consumer._full()
    assert consumer._room.is_set()  # the fetch loop resumes the partitions
    assert len(consumer._out) == 2 * (BUFFER_RECORDS // 2 + 1)  # handed out, not acked yet
