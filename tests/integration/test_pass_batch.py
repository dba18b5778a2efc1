"""PassBatcher against the real broker: entries added while one of its records is in flight are
gathered into the next record, and every add returns once the record holding it is on Kafka."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from agents.state.pass_batch import PassBatcher
from schemas.config import KafkaSettings
from schemas.errors import RecordTooLarge
from streams.kafka.batch_writer import BatchingKafkaWriter
from streams.kafka.producer import KafkaWriter
from tests.support.kafka import create_topic, read_all

pytestmark = pytest.mark.asyncio(loop_scope="module")
PASSES = 20


def encode(entries: list[str]) -> bytes:
    return orjson.dumps(entries)


async def test_entries_added_while_a_record_is_in_flight_share_the_next(
    kafka_bootstrap: str,
) -> None:
    # One entry per loop pass, as a worker whose events finish one or two per pass adds them.
    # Per pass, that was a record per entry (0.84 memory records per event in bench/pipeline);
    # gathered while the first record waits for its acks=all round trip, a few records.
    topic = await create_topic(kafka_bootstrap, "pass-batch", 1)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    batcher: PassBatcher[str] = PassBatcher(topic, "t-", encode)
    async with KafkaWriter(settings, client_id="pass-batch-test") as writer:
        await writer.send(topic, b"[]", key=b"warm-up")  # metadata and connection ready
        adds = []
        for index in range(PASSES):
            adds.append(asyncio.ensure_future(batcher.add(writer, f"entry-{index}")))
            await asyncio.sleep(0)  # the loop's next pass
        await asyncio.wait_for(asyncio.gather(*adds), 10)
    written = batcher.records_written
    assert written < PASSES / 2
    records = [record.json() for record in await read_all(kafka_bootstrap, topic)]
    assert len(records) == written + 1  # the warm-up's, then the batcher's
    entries = [entry for record in records[1:] for entry in record]
    assert entries == [f"entry-{index}" for index in range(PASSES)]


async def test_a_stop_ends_the_adds_still_gathering(kafka_bootstrap: str) -> None:
    # An entry gathered behind a record in flight has no write of its own yet: a stop must
    # still end its add, or the stage waiting on it would hang the worker's shutdown.
    topic = await create_topic(kafka_bootstrap, "pass-batch", 1)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    batcher: PassBatcher[str] = PassBatcher(topic, "t-", encode)
    async with KafkaWriter(settings, client_id="pass-batch-test") as writer:
        await writer.send(topic, b"[]", key=b"warm-up")
        first = asyncio.ensure_future(batcher.add(writer, "first"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the first record's write has started
        behind = asyncio.ensure_future(batcher.add(writer, "behind"))
        await asyncio.sleep(0)
        await batcher.stop()
        results = await asyncio.wait_for(asyncio.gather(first, behind, return_exceptions=True), 10)
        assert isinstance(results[1], asyncio.CancelledError)
        # Used again after the stop (a worker's memories start again with its agents): the
        # adds of later passes still go out, behind the first record as before.
        again = []
        for index in range(3):
            again.append(asyncio.ensure_future(batcher.add(writer, f"again-{index}")))
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*again), 10)


async def test_a_record_its_topic_refuses_as_too_large_is_written_in_smaller_ones(
    kafka_bootstrap: str,
) -> None:
    # A memory topic whose max.message.bytes is under the batcher's 128 KiB record: the
    # gathered entries go out in halves, in order, instead of failing every add (each an
    # event's mark: its stage would redo the event, model call included).
    topic = await create_topic(
        kafka_bootstrap, "pass-batch", 1, config={"max.message.bytes": "2000"}
    )
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    batcher: PassBatcher[str] = PassBatcher(topic, "t-", encode)
    async with BatchingKafkaWriter(settings, client_id="pass-batch-test") as writer:
        await writer.send(topic, b"[]", key=b"warm-up")
        values = [f"entry-{index}-" + "x" * 300 for index in range(20)]  # ~6.5 KB together
        adds = [batcher.join(writer, value, len(value) + 3) for value in values]
        await asyncio.wait_for(asyncio.gather(*adds), 20)
        with pytest.raises(RecordTooLarge):  # an entry too large on its own still raises
            await asyncio.wait_for(batcher.add(writer, "y" * 3000), 20)
    records = [record.json() for record in await read_all(kafka_bootstrap, topic)]
    assert len(records) > 4  # none over 2,000 bytes
    assert [entry for record in records[1:] for entry in record] == values
