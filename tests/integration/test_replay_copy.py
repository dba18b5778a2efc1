"""The replay's copy path on the real broker, without the pipeline around it.

``Replayer.run`` reads fetched record batches directly (``read_window_raw``) and appends to
producer batches through their record builder (aiokafka internals, for speed): these tests pin
what that must keep doing. A window whose bounds fall inside record batches, with a committed
transaction (and so a control record) inside it, is copied exactly: every record once, in
order per partition, key, value and headers kept, a stale replay header replaced by this
replay's. Tiny producer batches make each partition's copy many batches, which the broker
accepts only if the idempotent producer's sequence numbers add up across them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.config import HookstreamConfig, KafkaSettings
from schemas.config_flows import FlowConfig
from schemas.config_loader import load_config
from schemas.errors import LettersRefused, ToolError
from streams.kafka.admin import create_topics
from streams.kafka.reader import new_consumer, read_window_raw, window
from streams.kafka.size_limits import KAFKA_DEFAULT_MAX_MESSAGE_BYTES, lone_record_bytes
from streams.ops import replay as replay_module
from streams.ops.dlq import DeadLetters, DLQFilter
from streams.ops.replay import (
    Estimating,
    ModelEstimate,
    Original,
    Priced,
    Replayer,
    ReplayFilter,
    ReplayStats,
)
from tests.support.kafka import Record, delete_topics, read_all
from tests.support.sinkstack import wait_until
from tests.unit.schemas.test_config_loader import EXAMPLE, EXAMPLE_ENV

pytestmark = pytest.mark.asyncio(loop_scope="module")
PARTITIONS = 3
REPLAY = "hookstream-replay"
PLAIN_BATCH = 7  # records per plain producer batch: window bounds fall inside batches
TXN_RECORDS = 5  # then a transaction's records and its commit marker (a control record)
START, END = 5, 40  # the replayed offsets of every partition


def _value(partition: int, n: int, source: str) -> bytes:
    return orjson.dumps({"id": f"p{partition}-{n}", "source": source, "type": "ticket.created"})


def _headers(n: int) -> list[tuple[str, bytes]]:
    """Some records carry headers, one of them a stale replay header."""
    if n % 3 == 0:
        return [("trace", f"t{n}".encode()), (REPLAY, b"an-older-replay")]
    if n % 3 == 1:
        return [("trace", f"t{n}".encode())]
    return []


async def _fill(bootstrap: str, topic: str) -> None:
    """Per partition: 4 plain batches of 7, a committed transaction of 5 (+ its marker),
    then 3 more plain batches of 7: offsets 0-27 plain, 28-32 in the transaction, 33 the
    commit marker, 34-54 plain. Every sixth record comes from another source."""
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    txn = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"replay-copy-{uuid.uuid4().hex}"
    )
    await plain.start()
    await txn.start()
    try:
        counters = dict.fromkeys(range(PARTITIONS), 0)

        async def plain_batches(count: int) -> None:
            for partition in range(PARTITIONS):
                for _ in range(count):
                    batch = plain.create_batch()
                    for _ in range(PLAIN_BATCH):
                        n = counters[partition]
                        counters[partition] += 1
                        source = "payments" if n % 6 == 5 else "helpdesk"
                        batch.append(
                            key=f"k{n % 4}".encode(),
                            value=_value(partition, n, source),
                            timestamp=None,
                            headers=_headers(n),
                        )
                    await (await plain.send_batch(batch, topic, partition=partition))

        await plain_batches(4)
        async with txn.transaction():
            for partition in range(PARTITIONS):
                for _ in range(TXN_RECORDS):
                    n = counters[partition]
                    counters[partition] += 1
                    await txn.send(
                        topic,
                        _value(partition, n, "helpdesk"),
                        key=f"k{n % 4}".encode(),
                        partition=partition,
                        headers=_headers(n),
                    )
        # The coordinator writes the commit markers after the commit returns: wait for them,
        # so that the plain records after the transaction follow the markers.
        marked = 4 * PLAIN_BATCH + TXN_RECORDS + 1

        async def markers_written() -> bool:
            return min((await _ends(bootstrap, topic)).values()) >= marked

        await wait_until(markers_written, timeout_s=30, poll_s=0.05)
        await plain_batches(3)
    finally:
        await txn.stop()
        await plain.stop()


PREFIX = f"replay-copy-{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    name = f"{PREFIX}.events"  # the events role: the filters read CloudEvents
    await create_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), {name: {}}, partitions=PARTITIONS
    )
    await _fill(kafka_bootstrap, name)
    yield name
    await delete_topics(kafka_bootstrap, [name])


@pytest.fixture(scope="module")
def config(kafka_bootstrap: str) -> HookstreamConfig:
    loaded = load_config(EXAMPLE, env=EXAMPLE_ENV)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=PREFIX)
    return loaded.model_copy(update={"kafka": kafka})


def _expected_headers(record: Record, replay_id: str) -> dict[str, bytes]:
    kept = {k: v for k, v in record.headers.items() if k != REPLAY}
    return {**kept, REPLAY: replay_id.encode()}


async def _originals(bootstrap: str, topic: str) -> dict[int, list[Record]]:
    records = await read_all(bootstrap, topic)
    by_partition: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
    for record in records:
        by_partition[record.partition].append(record)
    return by_partition


async def test_read_window_raw_covers_the_window_exactly(kafka_bootstrap: str, topic: str) -> None:
    consumer = new_consumer(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        max_partition_fetch_bytes=1024,
        check_crcs=False,
    )
    await consumer.start()
    try:
        win = await window(consumer, topic, START, END)
        seen: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        async for partition, records in read_window_raw(consumer, win):
            seen[partition].extend(r.offset for r in records)
    finally:
        await consumer.stop()
    commit_marker = 4 * PLAIN_BATCH + TXN_RECORDS
    expected = [o for o in range(START, END) if o != commit_marker]
    assert seen == dict.fromkeys(range(PARTITIONS), expected)


async def test_a_window_is_copied_exactly_in_order_and_marked(
    kafka_bootstrap: str, topic: str, config: HookstreamConfig
) -> None:
    before = await _originals(kafka_bootstrap, topic)
    ends = await _ends(kafka_bootstrap, topic)
    # 1 KiB producer batches: each partition's copy is several batches, which the broker
    # takes (and does not drop as duplicates) only if each told its record count.
    replayer = Replayer(config, topic, start=START, end=END, batch_bytes=1024)
    stats = await replayer.run()
    await _check_copied(kafka_bootstrap, topic, before, ends, stats)


async def _check_copied(
    bootstrap: str,
    topic: str,
    before: dict[int, list[Record]],
    ends: dict[int, int],
    stats: ReplayStats,
) -> None:
    """Past ``ends``, each partition holds its window's records once, in order, marked."""
    window_records = {
        p: [r for r in before[p] if START <= r.offset < END] for p in range(PARTITIONS)
    }
    size = sum(len(v) for v in window_records.values())
    assert size == PARTITIONS * (END - START - 1)  # minus each partition's commit marker
    assert (stats.read, stats.replayed, stats.filtered_out) == (size, size, 0)
    after = await _originals(bootstrap, topic)
    for partition in range(PARTITIONS):
        copies = [r for r in after[partition] if r.offset >= ends[partition]]
        originals = window_records[partition]
        assert [(c.key, c.value) for c in copies] == [(o.key, o.value) for o in originals]
        assert [c.headers for c in copies] == [
            _expected_headers(o, stats.replay_id) for o in originals
        ]


async def test_a_filtered_replay_copies_only_what_it_selects(
    kafka_bootstrap: str, topic: str, config: HookstreamConfig
) -> None:
    before = await _originals(kafka_bootstrap, topic)
    ends = await _ends(kafka_bootstrap, topic)
    replayer = Replayer(
        config,
        topic,
        start=START,
        end=END,
        selection=ReplayFilter(source="payments"),
        batch_bytes=1024,
    )
    stats = await replayer.run()

    after = await _originals(kafka_bootstrap, topic)
    chosen: list[Any] = []
    for partition in range(PARTITIONS):
        wanted = [
            r
            for r in before[partition]
            if START <= r.offset < END and r.json()["source"] == "payments"
        ]
        copies = [r for r in after[partition] if r.offset >= ends[partition]]
        assert [(c.key, c.value) for c in copies] == [(w.key, w.value) for w in wanted]
        chosen.extend(wanted)
    assert chosen  # every sixth record
    assert stats.replayed == len(chosen)
    assert stats.filtered_out == stats.read - len(chosen)


async def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = new_consumer(KafkaSettings(bootstrap_servers=bootstrap))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: int(ends[tp]) for tp in tps}
    finally:
        await consumer.stop()


async def test_an_unknown_topic_is_refused_before_anything_is_written(
    kafka_bootstrap: str, config: HookstreamConfig
) -> None:
    missing = f"{PREFIX}.no-such-topic"
    with pytest.raises(ToolError, match="does not exist"):
        await Replayer(config, missing, start=0, end=None).run()
    consumer = new_consumer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    await consumer.start()
    try:
        assert missing not in await consumer.topics()
    finally:
        await consumer.stop()


async def test_a_prepared_replay_that_never_runs_writes_nothing_and_stops_its_clients(
    kafka_bootstrap: str, topic: str, config: HookstreamConfig
) -> None:
    """The CLI connects the copy's clients while the estimate runs (``prepare``); a replay
    declined after that (or one whose estimate failed) closes them having written nothing."""
    ends = await _ends(kafka_bootstrap, topic)
    replayer = Replayer(config, topic, start=START, end=END)
    replayer.prepare()
    clients = replayer._clients
    connected = replayer._connected
    assert clients is not None
    assert connected is not None
    consumer, producers = clients
    assert [tp.partition for tp in await connected] == list(range(PARTITIONS))
    await replayer.close()

    assert await _ends(kafka_bootstrap, topic) == ends
    assert consumer._closed
    assert all(producer._closed for producer in producers)
    assert replayer._clients is None  # closing twice is harmless
    await replayer.close()


class _RecordingPricer:
    """Prices each task by its event id (deterministic), and notes what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, Original | None]] = []

    def price(
        self, flow: FlowConfig, role: str, value: dict[str, Any], original: Original | None
    ) -> Priced:
        self.asked.append((flow.name, str(value.get("id")), original))
        return Priced("call", prompt_tokens=len(str(value.get("id"))), cost_usd=0.25)


@pytest.mark.parametrize("priced_max", [30, 95, 10_000])
async def test_a_replay_that_asks_nobody_estimates_from_its_own_reads_what_the_estimate_reads(
    kafka_bootstrap: str,
    topic: str,
    config: HookstreamConfig,
    priced_max: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run(estimating=...)`` (replay --yes) reads the window once and takes the estimate's
    sample from the copy's reads: the same tasks priced, the same figures, as
    ``estimate()`` reading its slices on its own (30: slices of one record; 95: overlapping
    slices; 10,000: the whole window), and the copy still copies every record."""
    monkeypatch.setattr(replay_module, "PRICED_MAX", priced_max)
    alone = _RecordingPricer()
    expected = await Replayer(config, topic, start=START, end=END).estimate(alone)
    assert alone.asked  # the window's events match a flow of the example config

    ends = await _ends(kafka_bootstrap, topic)
    copying = _RecordingPricer()
    reported: list[ModelEstimate] = []
    replayer = Replayer(config, topic, start=START, end=END, batch_bytes=1024)
    stats = await replayer.run(estimating=Estimating(copying, reported.append))

    assert reported == [expected]
    assert bool(expected.sampled) == (priced_max < expected.window)
    assert sorted(copying.asked, key=repr) == sorted(alone.asked, key=repr)
    assert stats.window == expected.window
    assert stats.replayed == stats.read == PARTITIONS * (END - START - 1)  # no commit markers
    after = await _ends(kafka_bootstrap, topic)
    assert sum(after.values()) - sum(ends.values()) == stats.replayed


async def test_a_window_the_estimate_read_whole_is_copied_without_fetching_it_again(
    kafka_bootstrap: str,
    topic: str,
    config: HookstreamConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replay that asks first (no --yes): the estimate reads a window of up to PRICED_MAX
    records whole, and keeps it for the copy after the answer, which fetches nothing."""
    before = await _originals(kafka_bootstrap, topic)
    ends = await _ends(kafka_bootstrap, topic)
    replayer = Replayer(config, topic, start=START, end=END, batch_bytes=1024)
    await replayer.estimate(_RecordingPricer())

    def fetched_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("the copy fetched the window again")

    monkeypatch.setattr(replay_module, "read_window_raw", fetched_again)
    stats = await replayer.run()
    await _check_copied(kafka_bootstrap, topic, before, ends, stats)


async def test_a_topic_taking_smaller_batches_than_the_copys_gets_them(
    kafka_bootstrap: str, config: HookstreamConfig
) -> None:
    # A topic whose max.message.bytes (here 20,000) is under the copy's batches (1 MiB):
    # before, the broker refused every full batch and the replay failed with
    # MessageSizeTooLargeError after writing part of the window.
    name = f"{PREFIX}-small.events"
    await create_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        {name: {"max.message.bytes": "20000"}},
        partitions=1,
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_batch_size=16_384)
    await producer.start()
    try:
        values = [_value(0, n, "helpdesk") + b" " * 400 for n in range(300)]  # ~130 KB
        for value in values:
            await producer.send(name, value, key=b"k")
        await producer.flush()
    finally:
        await producer.stop()
    stats = await Replayer(config, name, start=0, end=300).run()
    assert (stats.read, stats.replayed) == (300, 300)
    copies = [r for r in await read_all(kafka_bootstrap, name) if r.offset >= 300]
    assert [c.value for c in copies] == values
    await delete_topics(kafka_bootstrap, [name])


async def _raise_limit(bootstrap: str, topic: str, limit_bytes: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(limit_bytes)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
    finally:
        await admin.close()


@pytest.mark.parametrize("limit", [3000, KAFKA_DEFAULT_MAX_MESSAGE_BYTES], ids=["3000", "default"])
async def test_a_record_the_topic_refuses_with_the_replay_header_is_dead_lettered(
    kafka_bootstrap: str, config: HookstreamConfig, limit: int
) -> None:
    # A record within a few bytes of the topic's max.message.bytes fits as written, but not
    # once it carries the replay header. Before, the broker refused its batch, the replay
    # failed ("MessageSizeTooLargeError — check that Kafka runs") and the records after it
    # were not replayed; now it is a dead letter saying why, the rest of the window is
    # replayed, and a redrive after the limit is raised writes what the replay would have.
    # At Kafka's default limit (~1 MiB) the letter is over the DLQ's limit too: it goes without
    # its value, which the redrive reads at its coordinates, and writes in a request over the
    # pipeline's 1 MiB.
    default = limit == KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    name = f"{PREFIX}-near-{limit}.events"
    prefix = f"{PREFIX}-{limit}"
    dlq = f"{prefix}.dlq"
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    await create_topics(
        settings,
        {name: {} if default else {"max.message.bytes": str(limit)}, dlq: {}},
        partitions=1,
    )
    await create_topics(
        settings, {f"{prefix}.dlq-redriven": {"cleanup.policy": "compact"}}, partitions=1
    )
    headers = [("trace", b"t1")]
    marker = (REPLAY, b"0" * 12)  # a replay id is 12 characters
    base = _value(0, 1, "helpdesk")
    start = limit - len(base) - 200
    pad = next(
        n
        for n in range(start, limit)
        if lone_record_bytes(b"k", base + b" " * n, [*headers, marker]) > limit
    )
    near = base + b" " * pad
    assert lone_record_bytes(b"k", near, headers) <= limit  # the topic takes it as written
    values = [_value(0, 0, "helpdesk"), near, _value(0, 2, "helpdesk")]
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=2 * limit
    )
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(name, value, key=b"k", headers=headers)
    finally:
        await producer.stop()

    kafka = config.kafka.model_copy(update={"topic_prefix": prefix})
    replayer = Replayer(config.model_copy(update={"kafka": kafka}), name, start=0, end=3)
    stats = await replayer.run()
    assert (stats.read, stats.replayed, stats.dead_lettered) == (3, 2, 1)
    copies = [r for r in await read_all(kafka_bootstrap, name) if r.offset >= 3]
    assert [c.value for c in copies] == [values[0], values[2]]
    assert {c.headers[REPLAY] for c in copies} == {replayer.replay_id.encode()}
    [letter] = await read_all(kafka_bootstrap, dlq)
    assert letter.value == (b"" if default else near)
    assert ("hookstream-dlq-value_omitted" in letter.headers) is default
    assert letter.headers["hookstream-dlq-stage"] == b"replay"
    assert letter.headers["hookstream-dlq-error_class"] == b"RecordTooLarge"
    reason = letter.headers["hookstream-dlq-error_message"].decode()
    assert f"max.message.bytes is {limit}" in reason
    assert letter.headers["hookstream-dlq-original_offset"] == b"1"
    assert letter.headers[REPLAY] == replayer.replay_id.encode()

    # Redriven before the limit is raised: refused, naming the topic and its limit (before,
    # "check that Kafka runs"), and not marked redriven.
    letters = DeadLetters(kafka)
    with pytest.raises(LettersRefused, match=f"its max.message.bytes is {limit}"):
        await letters.redrive(DLQFilter(stage="replay"))
    assert [r.offset for r in await read_all(kafka_bootstrap, name)] == [0, 1, 2, 3, 4]

    await _raise_limit(kafka_bootstrap, name, 4 * limit)
    redriven, _ = await letters.redrive(DLQFilter(stage="replay"))
    assert len(redriven) == 1
    [again] = [r for r in await read_all(kafka_bootstrap, name) if r.offset >= 5]
    assert again.value == near
    assert again.headers[REPLAY] == replayer.replay_id.encode()
    assert again.headers["trace"] == b"t1"
    await delete_topics(kafka_bootstrap, [name, dlq, f"{prefix}.dlq-redriven"])
