"""The sinks' delivered-memory against the real broker: what another worker delivered is seen,
and the check before a delivery is not held behind the memory's own long-polling tail."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition

from agents.emit import Record
from agents.state.delivered import DELIVERED, DeliveredMemory
from schemas.config import KafkaSettings
from streams.kafka.producer import KafkaWriter
from tests.support.kafka import create_topic

pytestmark = pytest.mark.asyncio(loop_scope="module")
# Far longer than the check's bound below: a check queued behind the tail's fetch (one
# connection, answered in order) would wait this long for the broker's answer.
TAIL_WAIT_MS = 20_000


def count_end_offsets(memory: DeliveredMemory) -> list[list[TopicPartition]]:
    """The partitions of each ListOffsets request ``memory`` sends from now on, in order."""
    assert memory._ends is not None
    ends = memory._ends
    asked: list[list[TopicPartition]] = []
    real = ends.end_offsets

    async def counted(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        asked.append(list(tps))
        offsets: dict[TopicPartition, int] = await real(tps)
        return offsets

    ends.end_offsets = counted
    return asked


async def test_a_delivery_by_another_worker_is_seen_without_waiting_on_the_tail(
    kafka_bootstrap: str,
) -> None:
    topic = await create_topic(kafka_bootstrap, "delivered", 4)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    memory = DeliveredMemory(settings, topic, tail_fetch_max_wait_ms=TAIL_WAIT_MS)
    async with memory, KafkaWriter(settings, client_id="another-sink-worker") as other:
        await asyncio.sleep(1.0)  # the tail's first fetch is now long-polling the empty topic
        assert await asyncio.wait_for(memory.outcome("src/evt-1/flow/crm"), 10) is None
        # Another worker delivers a key: this one must see it at its next check.
        await other.send(topic, b'{"status":200}', key=b"src/evt-2/flow/crm")
        outcome = await asyncio.wait_for(memory.outcome("src/evt-2/flow/crm"), 10)
        assert outcome == DELIVERED


async def test_a_partition_emptied_by_retention_does_not_hold_the_check(
    kafka_bootstrap: str,
) -> None:
    # A week without deliveries on a partition: retention deletes its records, so its log
    # starts where it ends and there is no record to read up to that end.
    topic = await create_topic(kafka_bootstrap, "delivered", 1)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    async with KafkaWriter(settings, client_id="an-earlier-sink-worker") as earlier:
        written = await earlier.send(topic, b'{"status":200}', key=b"src/old/flow/crm")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        tp = TopicPartition(topic, 0)
        await admin.delete_records({tp: RecordsToDelete(written.offset + 1)})
    finally:
        await admin.close()
    async with DeliveredMemory(settings, topic) as memory:
        assert await asyncio.wait_for(memory.outcome("src/new/flow/crm"), 10) is None


async def test_checks_made_together_share_one_end_offsets_request(kafka_bootstrap: str) -> None:
    # One ListOffsets request per check was a fifth of the sink worker's CPU (issue 16).
    topic = await create_topic(kafka_bootstrap, "delivered", 4)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    async with DeliveredMemory(settings, topic) as memory:
        asked = count_end_offsets(memory)
        keys = [f"src/evt-{index}/flow/crm" for index in range(40)]
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(memory.outcome(key) for key in keys)), 10
        )
        assert outcomes == [None] * len(keys)
        assert len(asked) == 1
        assert {tp.partition for tp in asked[0]} == {memory.partition_for(k.encode()) for k in keys}


async def test_a_check_begun_while_a_request_is_out_waits_for_the_next_one(
    kafka_bootstrap: str,
) -> None:
    # The answer of a request sent before a check began may predate a delivery made before
    # the check: sharing it would deliver that result a second time.
    topic = await create_topic(kafka_bootstrap, "delivered", 1)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    memory = DeliveredMemory(settings, topic, tail_fetch_max_wait_ms=TAIL_WAIT_MS)
    async with memory, KafkaWriter(settings, client_id="another-sink-worker") as other:
        assert memory._ends is not None
        ends = memory._ends
        real = ends.end_offsets
        answered, release = asyncio.Event(), asyncio.Event()

        async def held(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            offsets: dict[TopicPartition, int] = await real(tps)  # the end as of now
            if not answered.is_set():
                answered.set()
                await release.wait()  # ... but the answer is still on its way
            return offsets

        ends.end_offsets = held
        first = asyncio.create_task(memory.outcome("src/evt-1/flow/crm"))
        await answered.wait()
        await other.send(topic, b'{"status":200}', key=b"src/evt-2/flow/crm")
        second = asyncio.create_task(memory.outcome("src/evt-2/flow/crm"))
        await asyncio.sleep(0)  # the second check is waiting now
        release.set()
        assert await asyncio.wait_for(first, 10) is None
        assert await asyncio.wait_for(second, 10) == DELIVERED


async def test_per_assignment_one_catch_up_serves_every_check_until_the_next_assignment(
    kafka_bootstrap: str,
) -> None:
    # The sink worker's form (agents.sinks.wiring): another worker delivers only before this
    # one is given the partition, so one ListOffsets request after each assignment is enough;
    # one per batch of checks was a tenth of the sink worker's CPU (issue 16).
    topic = await create_topic(kafka_bootstrap, "delivered", 4)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    memory = DeliveredMemory(
        settings,
        topic,
        per_assignment=True,
        tail_fetch_min_bytes=64 * 1024,
        tail_fetch_max_wait_ms=100,
    )
    async with KafkaWriter(settings, client_id="another-sink-worker") as other:
        await other.send(topic, b'{"status":200}', key=b"src/before/flow/crm")
        async with memory, KafkaWriter(settings, client_id="this-sink-worker") as mine:
            asked = count_end_offsets(memory)
            memory.assigned()
            keys = [f"src/evt-{index}/flow/crm" for index in range(40)]
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(memory.outcome(key) for key in ["src/before/flow/crm", *keys])),
                10,
            )
            assert outcomes == [DELIVERED] + [None] * len(keys)
            assert len(asked) == 1
            assert {tp.partition for tp in asked[0]} == {0, 1, 2, 3}  # the whole memory
            # This worker's own deliveries are known at once, without asking.
            await memory.remember(mine, "src/evt-0/flow/crm", b'{"status":200}')
            assert await asyncio.wait_for(memory.outcome("src/evt-0/flow/crm"), 10) == DELIVERED
            more = await asyncio.wait_for(
                asyncio.gather(*(memory.outcome(key) for key in keys[1:])), 10
            )
            assert more == [None] * (len(keys) - 1)
            assert len(asked) == 1
            # What another worker delivered before the next assignment is seen after it.
            await other.send(topic, b'{"status":200}', key=b"src/evt-1/flow/crm")
            memory.assigned()
            outcome = await asyncio.wait_for(memory.outcome("src/evt-1/flow/crm"), 10)
            assert outcome == DELIVERED
            assert len(asked) == 2


async def test_per_assignment_deliveries_remembered_together_share_a_record(
    kafka_bootstrap: str,
) -> None:
    # A record per delivery was a second record per result written by the sink worker and
    # read back by every sink worker's tail (issue 16): those remembered in one pass of the
    # event loop share one, and another worker's memory still knows each of them.
    topic = await create_topic(kafka_bootstrap, "delivered", 4)
    receipts = await create_topic(kafka_bootstrap, "receipts", 1)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    keys = [f"src/evt-{index}/flow/crm" for index in range(30)]
    mine = DeliveredMemory(settings, topic, per_assignment=True)
    async with mine, KafkaWriter(settings, client_id="this-sink-worker") as writer:
        mine.assigned()
        assert await asyncio.wait_for(mine.outcome(keys[0]), 10) is None
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    mine.remember(
                        writer, key, b'{"status":200}', Record(receipts, key.encode(), None)
                    )
                    for key in keys
                )
            ),
            10,
        )
        assert mine.batches is not None
        written = mine.batches.records_written
        # Each remember returned once its receipt was acknowledged too: all 30 are there.
        assert await end_total(settings, receipts) == len(keys)
    assert written < len(keys) / 2
    assert await end_total(settings, topic) == written
    other = DeliveredMemory(settings, topic, per_assignment=True)
    async with other:
        other.assigned()
        outcomes = await asyncio.wait_for(asyncio.gather(*(other.outcome(key) for key in keys)), 10)
    assert outcomes == [DELIVERED] * len(keys)


async def end_total(settings: KafkaSettings, topic: str) -> int:
    """The records written to ``topic`` so far (the sum of its partitions' end offsets)."""
    async with DeliveredMemory(settings, topic) as reader:
        assert reader._reader is not None
        assert reader._ends is not None
        tps = [TopicPartition(topic, p) for p in reader._reader.partitions]
        ends: dict[TopicPartition, int] = await reader._ends.end_offsets(tps)
    return sum(ends.values())
