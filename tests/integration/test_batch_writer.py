"""The gateway's batching writer against the real broker: what it answers is what is on the topic.

Every test writes a concurrent burst, so that records share batches (the point of the writer),
then reads the topic back with a plain consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import RecordMetadata

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable, RecordTooLarge
from streams.kafka.admin import create_topics
from streams.kafka.batch_writer import BatchingKafkaWriter
from streams.kafka.size_limits import lone_record_bytes
from tests.support.broker import private_broker
from tests.support.kafka import read_all
from tests.support.sinkstack import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")
PARTITIONS = 4
HEADERS = [("content-type", b"application/json")]


async def create_topic(bootstrap: str, *, config: dict[str, str] | None = None) -> str:
    name = f"batch-writer-{uuid.uuid4().hex[:10]}"
    await create_topics(
        KafkaSettings(bootstrap_servers=bootstrap), {name: config or {}}, partitions=PARTITIONS
    )
    return name


@pytest_asyncio.fixture(loop_scope="module")
async def writer(kafka_bootstrap: str) -> AsyncIterator[BatchingKafkaWriter]:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, produce_timeout_s=10)
    async with BatchingKafkaWriter(settings, client_id="test-batch-writer") as started:
        yield started


async def burst(
    writer: BatchingKafkaWriter, topic: str, records: list[tuple[bytes, bytes]]
) -> list[RecordMetadata | BaseException]:
    """All writes started in the same loop iteration, so that they share rounds and batches."""
    return await asyncio.gather(
        *(writer.send(topic, value, key=key, headers=HEADERS) for key, value in records),
        return_exceptions=True,
    )


async def test_offsets_answered_are_the_records_offsets_on_the_topic(
    writer: BatchingKafkaWriter, kafka_bootstrap: str
) -> None:
    topic = await create_topic(kafka_bootstrap)
    batches_before = writer.batches_sent
    records = [(f"cus_{i % 13}".encode(), f'{{"n":{i}}}'.encode()) for i in range(600)]
    answers = await burst(writer, topic, records)
    assert all(isinstance(a, RecordMetadata) for a in answers), answers
    assert writer.batches_sent - batches_before < len(records) / 4  # they did share batches
    on_topic = {(r.partition, r.offset): r for r in await read_all(kafka_bootstrap, topic)}
    assert len(on_topic) == len(records)
    for (key, value), answer in zip(records, answers, strict=True):
        assert isinstance(answer, RecordMetadata)
        record = on_topic[(answer.partition, answer.offset)]
        assert (record.key, record.value) == (key, value)
        assert record.headers == dict(HEADERS)
        assert answer.timestamp > 0


async def test_burst_keeps_per_key_order_on_kafkas_default_partition(
    writer: BatchingKafkaWriter, kafka_bootstrap: str
) -> None:
    topic = await create_topic(kafka_bootstrap)
    keys = [f"customer-{k}".encode() for k in range(10)]
    records: list[tuple[bytes, bytes]] = []
    for round_no in range(3):  # three bursts back to back: order holds across rounds too
        burst_records = [(keys[i % len(keys)], f"{round_no}:{i}".encode()) for i in range(300)]
        answers = await burst(writer, topic, burst_records)
        assert all(isinstance(a, RecordMetadata) for a in answers), answers
        records += burst_records
    sent_order: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in records:
        sent_order[key].append(value)
    on_topic: dict[bytes, list[tuple[int, bytes]]] = defaultdict(list)
    for record in await read_all(kafka_bootstrap, topic):  # partition/offset order
        assert record.key is not None
        assert record.value is not None
        on_topic[record.key].append((record.partition, record.value))
    everything = list(range(PARTITIONS))
    for key in keys:
        # The Java client's and aiokafka's partition for the key (murmur2), in send order.
        expected_partition = DefaultPartitioner()(key, everything, everything)
        assert {p for p, _ in on_topic[key]} == {expected_partition}
        assert [v for _, v in on_topic[key]] == sent_order[key]


async def test_the_next_round_is_with_the_producer_before_the_last_rounds_callers_resume(
    writer: BatchingKafkaWriter, kafka_bootstrap: str
) -> None:
    # Answering a round's callers (a task step and a response each, in the gateway) before
    # the records that arrived meanwhile go out would leave the broker idle for that time.
    topic = await create_topic(kafka_bootstrap)
    await writer.send(topic, b"warm-up", key=b"k")  # metadata known: no wait in send()
    submitted = writer.records_sent

    async def write_first() -> tuple[RecordMetadata, int]:
        answer = await writer.send(topic, b"first", key=b"k")
        return answer, writer.records_sent  # counted in the step the caller resumes in

    first = asyncio.create_task(write_first())
    for _ in range(10_000):  # loop iterations, until the first round is with the producer
        if writer.records_sent > submitted:
            break
        await asyncio.sleep(0)
    second = asyncio.create_task(writer.send(topic, b"second", key=b"k"))  # pending meanwhile
    answer, sent_by_then = await first
    assert sent_by_then == submitted + 2, "first was answered before second was sent"
    assert (await second).offset == answer.offset + 1


async def test_callers_held_for_the_next_round_are_answered_while_its_submission_waits(
    writer: BatchingKafkaWriter, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Holding answers until the next round is submitted must not tie them to that submission
    # when it has to wait (metadata, a batch the producer still holds): a caller whose record
    # is on Kafka would otherwise wait for it, and past its deadline get a 503.
    topic = await create_topic(kafka_bootstrap)
    await writer.send(topic, b"warm-up", key=b"k")
    producer = writer._producer
    submit = producer.send_batch
    release = asyncio.Event()
    submissions = 0

    async def second_submission_waits(*args: Any, **kwargs: Any) -> Any:
        nonlocal submissions
        submissions += 1
        if submissions == 2:
            await release.wait()
        return await submit(*args, **kwargs)

    monkeypatch.setattr(producer, "send_batch", second_submission_waits)
    submitted = writer.records_sent
    first = asyncio.create_task(writer.send(topic, b"first", key=b"k"))
    for _ in range(10_000):  # loop iterations, until the first round is with the producer
        if writer.records_sent > submitted:
            break
        await asyncio.sleep(0)
    second = asyncio.create_task(writer.send(topic, b"second", key=b"k"))
    answer = await asyncio.wait_for(first, timeout=5)
    assert not second.done()
    release.set()
    assert (await second).offset == answer.offset + 1


async def test_partitions_added_to_a_topic_are_written_once_the_metadata_says_so(
    writer: BatchingKafkaWriter, kafka_bootstrap: str
) -> None:
    # The writer keeps each topic's partition count; a metadata update must make it forget.
    topic = await create_topic(kafka_bootstrap)
    keys = [f"cus_{i}".encode() for i in range(64)]
    before = await burst(writer, topic, [(key, b"before") for key in keys])
    assert {a.partition for a in before if isinstance(a, RecordMetadata)} == set(range(PARTITIONS))
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(PARTITIONS * 2)})
    finally:
        await admin.close()
    client = writer._producer.client
    for _ in range(50):  # until the broker's metadata shows the new partitions
        await client.force_metadata_update()
        if len(client.cluster.partitions_for_topic(topic) or ()) == PARTITIONS * 2:
            break
        await asyncio.sleep(0.1)
    after = await burst(writer, topic, [(key, b"after") for key in keys])
    partitioner = DefaultPartitioner()
    expected = [partitioner(key, list(range(PARTITIONS * 2)), []) for key in keys]
    assert [a.partition for a in after if isinstance(a, RecordMetadata)] == expected
    assert max(expected) >= PARTITIONS  # some keys did move to a new partition


async def test_a_batch_refused_as_too_large_is_written_again_in_smaller_batches(
    writer: BatchingKafkaWriter, kafka_bootstrap: str
) -> None:
    # Each record fits the topic's limit, a batch of several does not: the broker refuses the
    # whole batch. The writer learns the limit and writes them all in batches under it, in
    # order; before, every caller got BrokerUnavailable, and the same batch came back.
    topic = await create_topic(kafka_bootstrap, config={"max.message.bytes": "4000"})
    warm = await writer.send(topic, b"warm-up", key=b"same", headers=HEADERS)
    values = [f"{n:03d}".encode() + b"x" * 900 for n in range(20)]
    answers = await burst(writer, topic, [(b"same", value) for value in values])
    assert all(isinstance(a, RecordMetadata) for a in answers), answers
    on_topic = await read_all(kafka_bootstrap, topic)
    assert [r.value for r in on_topic] == [b"warm-up", *values]  # every one, once, in order
    offsets = [a.offset for a in answers if isinstance(a, RecordMetadata)]
    assert offsets == list(range(warm.offset + 1, warm.offset + 21))
    # A record over the limit is now refused here, without a batch: the producer's sequence
    # stays whole, and the next write to the partition lands at the first try.
    batches_before = writer.batches_sent
    with pytest.raises(RecordTooLarge, match=f"{topic} accepts \\(its max.message.bytes is 4000"):
        await writer.send(topic, b"x" * 5000, key=b"same")
    assert writer.batches_sent == batches_before
    after = await writer.send(topic, b"after", key=b"same", headers=HEADERS)
    assert after.offset == warm.offset + 21


async def test_a_record_too_large_in_a_batch_is_refused_alone(
    writer: BatchingKafkaWriter, kafka_bootstrap: str
) -> None:
    # The gateway's case: one webhook over the topic's limit among others that fit, in the
    # same batch, before the writer knows the limit. It alone gets RecordTooLarge (413).
    topic = await create_topic(kafka_bootstrap, config={"max.message.bytes": "4000"})
    await writer.send(topic, b"metadata", key=b"other")  # the topic's metadata, known
    values = [b"a" * 300] * 5 + [b"b" * 5000] + [b"c" * 300] * 5
    answers = await burst(writer, topic, [(b"same", value) for value in values])
    assert isinstance(answers[5], RecordTooLarge)
    assert all(isinstance(a, RecordMetadata) for i, a in enumerate(answers) if i != 5), answers
    on_topic = [r.value for r in await read_all(kafka_bootstrap, topic) if r.key == b"same"]
    assert on_topic == values[:5] + values[6:]


async def test_a_record_at_the_topics_limit_is_written_and_one_byte_more_is_refused(
    writer: BatchingKafkaWriter, kafka_bootstrap: str
) -> None:
    # The size the writer checks is the one the broker checks: a batch of the record alone.
    topic = await create_topic(kafka_bootstrap, config={"max.message.bytes": "4000"})

    def sized(total_bytes: int) -> bytes:
        value = b"x" * total_bytes
        while lone_record_bytes(b"k", value, []) > total_bytes:
            value = value[:-1]
        assert lone_record_bytes(b"k", value, []) == total_bytes
        return value

    fits = await writer.send(topic, sized(4000), key=b"k")
    with pytest.raises(RecordTooLarge):  # refused by the broker: the writer learns the limit
        await writer.send(topic, sized(4001), key=b"k")
    with pytest.raises(RecordTooLarge):  # refused here
        await writer.send(topic, sized(4001), key=b"k")
    again = await writer.send(topic, sized(4000), key=b"k")
    assert [r.offset for r in await read_all(kafka_bootstrap, topic)] == [fits.offset, again.offset]


async def test_a_record_too_large_on_its_own_is_not_retriable(
    writer: BatchingKafkaWriter, kafka_bootstrap: str
) -> None:
    topic = await create_topic(kafka_bootstrap)
    with pytest.raises(RecordTooLarge):
        await writer.send(topic, b"x" * (1024 * 1024 + 1), key=b"k")
    ok = await writer.send(topic, b"small", key=b"k")
    assert ok.offset == 0


async def test_a_stopped_writer_refuses_at_once(kafka_bootstrap: str) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, produce_timeout_s=10)
    writer = BatchingKafkaWriter(settings)
    await writer.start()
    topic = await create_topic(kafka_bootstrap)
    first = await writer.send(topic, b"one", key=b"k")
    await writer.stop()
    with pytest.raises(BrokerUnavailable):
        await writer.send(topic, b"two", key=b"k")
    assert [r.offset for r in await read_all(kafka_bootstrap, topic)] == [first.offset]


async def test_stopping_with_writes_in_flight_answers_every_caller(kafka_bootstrap: str) -> None:
    # A round with the producer when stop() comes is flushed by the producer's stop: its
    # callers get their offsets; what was never handed over gets BrokerUnavailable. None may
    # be left waiting (the deadline sweeper stops with the writer).
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, produce_timeout_s=10)
    writer = BatchingKafkaWriter(settings)
    await writer.start()
    topic = await create_topic(kafka_bootstrap)
    await writer.send(topic, b"warm-up", key=b"k")
    submitted = writer.records_sent
    calls = [
        asyncio.create_task(writer.send(topic, b"v%d" % i, key=b"cus_%d" % (i % 7)))
        for i in range(300)
    ]
    for _ in range(10_000):  # loop iterations, until a round is with the producer
        if writer.records_sent > submitted:
            break
        await asyncio.sleep(0)
    await writer.stop()
    answers = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
    on_topic = {(r.partition, r.offset): r.value for r in await read_all(kafka_bootstrap, topic)}
    offsets = [a for a in answers if isinstance(a, RecordMetadata)]
    assert offsets, "the round with the producer was not answered from its flush"
    for index, answer in enumerate(answers):
        if isinstance(answer, RecordMetadata):
            assert on_topic[(answer.partition, answer.offset)] == b"v%d" % index
        else:
            assert isinstance(answer, BrokerUnavailable), answer
    assert len(on_topic) == 1 + len(offsets)  # nothing on the topic that got a 503


async def test_submit_answers_with_a_future_and_only_with_hookstream_errors(
    kafka_bootstrap: str,
) -> None:
    # submit() is what the gateway answers from: a future per record, never a coroutine to
    # drive, failing only with BrokerUnavailable or RecordTooLarge (which its 503 and 413
    # depend on), here a topic the producer has no metadata for yet, then one that does not
    # exist (the broker does not create topics on demand).
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, produce_timeout_s=2)
    async with BatchingKafkaWriter(settings, client_id="test-submit") as writer:
        topic = await create_topic(kafka_bootstrap)
        first = [writer.submit(topic, b'{"n":%d}' % i, key=b"k") for i in range(5)]
        assert all(isinstance(f, asyncio.Future) for f in first)
        answers = await asyncio.gather(*first)
        assert [a.offset for a in answers] == [0, 1, 2, 3, 4]  # one key: one partition, in order
        missing = writer.submit(f"absent-{uuid.uuid4().hex[:8]}", b"{}", key=b"k")
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(missing, timeout=20)
        with pytest.raises(RecordTooLarge):
            writer.submit(topic, b"x" * (2 * 1024 * 1024))


async def test_a_write_expired_while_its_topic_metadata_was_fetched_is_never_written(
    kafka_bootstrap: str,
) -> None:
    # The first write to a topic waits for the topic's metadata. If its deadline answers the
    # caller first (503: the sender will retry), the record must not be written afterwards,
    # or the retry would put it on the topic twice.
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, produce_timeout_s=10)
    async with BatchingKafkaWriter(settings, client_id="test-late-metadata") as writer:
        topic = await create_topic(kafka_bootstrap)
        expired = writer.submit(topic, b'{"n":"expired"}', key=b"k")
        assert writer._metadata_fetches  # the metadata is being fetched
        expired.set_exception(BrokerUnavailable("the caller's deadline passed"))
        await asyncio.gather(*writer._metadata_fetches)
        kept = await writer.submit(topic, b'{"n":"kept"}', key=b"k")
        with pytest.raises(BrokerUnavailable):
            expired.result()
    on_topic = await read_all(kafka_bootstrap, topic)
    assert [r.value for r in on_topic] == [b'{"n":"kept"}']
    assert kept.offset == 0


async def test_write_and_outcome_keep_the_pending_write_contract(
    writer: BatchingKafkaWriter, kafka_bootstrap: str
) -> None:
    # The worker's and the sinks' writes (agents.emit): write() hands the record over and
    # returns at once; outcome() waits for its acknowledgement, as often as it takes.
    topic = await create_topic(kafka_bootstrap)
    pending = [
        await writer.write(topic, b"v%d" % i, key=b"cus_%d" % (i % 5), headers=HEADERS)
        for i in range(40)
    ]
    answers = [await writer.outcome(p) for p in pending]
    assert all(not p.given_up for p in pending)
    on_topic = {(r.partition, r.offset): r.value for r in await read_all(kafka_bootstrap, topic)}
    assert {(a.partition, a.offset): b"v%d" % i for i, a in enumerate(answers)} == on_topic
    assert writer.batches_sent < 40  # records shared batches


async def test_a_write_the_producer_refused_is_given_up_and_not_written(
    writer: BatchingKafkaWriter, kafka_bootstrap: str
) -> None:
    # Only a write that can no longer land may be written again (agents.emit): a batch the
    # broker refused is one (here: records without a key, which a compacted topic refuses);
    # a topic whose metadata never comes is another (never queued).
    topic = await create_topic(kafka_bootstrap, config={"cleanup.policy": "compact"})
    pending = [await writer.write(topic, b"x" * 900, key=None) for _ in range(20)]
    for write in pending:
        with pytest.raises(BrokerUnavailable):
            await writer.outcome(write)
    assert all(write.given_up for write in pending)
    # A record over the topic's limit is refused for good: RecordTooLarge, which agents.emit
    # does not retry (the stage dead-letters the event).
    limited = await create_topic(kafka_bootstrap, config={"max.message.bytes": "4000"})
    alone = await writer.write(limited, b"x" * 5000, key=b"alone")
    with pytest.raises(RecordTooLarge):
        await writer.outcome(alone)
    assert alone.given_up
    assert await read_all(kafka_bootstrap, topic) == []
    assert await read_all(kafka_bootstrap, limited) == []
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, produce_timeout_s=2)
    async with BatchingKafkaWriter(settings, client_id="test-write-absent") as short:
        absent = await short.write(f"absent-{uuid.uuid4().hex[:8]}", b"{}", key=b"k")
        assert not absent.given_up  # waiting for the topic's metadata
        with pytest.raises(BrokerUnavailable):
            await short.outcome(absent, timeout_s=20)
        assert absent.given_up


async def test_a_write_held_by_a_stopped_producer_is_given_up(kafka_bootstrap: str) -> None:
    # A producer stopped without answering a batch (a replaced one, or this writer's at a
    # stop) never resolves it: the write must then count as given up, or its caller would
    # wait on it forever. Here the producer's sender is cancelled before the answer came.
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, produce_timeout_s=10)
    writer = BatchingKafkaWriter(settings)
    await writer.start()
    topic = await create_topic(kafka_bootstrap)
    await writer.send(topic, b"warm-up", key=b"k")
    producer = writer._producer
    producer._sender.sender_task.cancel()  # what a retired producer's stop leaves behind
    pending = await writer.write(topic, b"held", key=b"k")
    for _ in range(10_000):  # loop iterations, until its round is with the producer
        if writer._unsettled:
            break
        await asyncio.sleep(0)
    assert not pending.given_up
    await writer.stop()
    assert pending.given_up
    with pytest.raises(BrokerUnavailable):
        await writer.outcome(pending, timeout_s=1)


async def _final_outcome(writer: BatchingKafkaWriter, pending: Any) -> RecordMetadata:
    """Wait on ``pending`` until it ends, as a caller keeping the write contract does."""
    while True:
        with contextlib.suppress(BrokerUnavailable):
            return await writer.outcome(pending, timeout_s=5.0)


async def test_a_batch_refused_as_too_large_after_its_round_stopped_waiting_replaces_the_producer(
    tmp_path: Path,
) -> None:
    # The broker frozen (SIGSTOP) while a record over the topic's limit is with it, and thawed
    # once the round has stopped waiting (produce_timeout_s): the refusal ends the batch late.
    # Its sequence numbers were counted, so the producer's next write to that partition
    # failed with OutOfOrderSequenceNumber (503) before; now the late refusal replaces the
    # producer, and the next write is acknowledged.
    async with private_broker(tmp_path / "broker") as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap, produce_timeout_s=1.0)
        topic = f"late-{uuid.uuid4().hex[:8]}"
        await create_topics(
            settings,
            {topic: {"max.message.bytes": "3000"}},
            partitions=1,
            replication_factor=1,
        )
        async with BatchingKafkaWriter(settings, client_id="test-late") as writer:
            assert (await writer.send(topic, b"first", key=b"k")).offset == 0
            first_producer = writer._producer
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                late = await writer.write(topic, b"x" * 3500, key=b"k")
                await asyncio.sleep(2.0)  # past the round's wait: the batch ends late
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            with pytest.raises(RecordTooLarge):
                await _final_outcome(writer, late)

            async def replaced() -> bool:
                return writer._producer is not first_producer

            await wait_until(replaced, timeout_s=30)
            assert (await writer.send(topic, b"after", key=b"k")).offset == 1
        assert [r.value for r in await read_all(broker.bootstrap, topic)] == [b"first", b"after"]
