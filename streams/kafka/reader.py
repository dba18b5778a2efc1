"""Reading a bounded window of a topic, for the operator tools (replay, dlq, tail).

A window is fixed when the command starts: per partition, ``[start, end)`` offsets, where a
time bound becomes the first offset whose record timestamp is at or after that time (Kafka's
ListOffsets by timestamp) and an open end is the partition's end offset at that moment. What is
written to the topic afterwards — a replay's own output, say — is never read by the same run.

Two readers: :func:`read_window` hands out aiokafka ``ConsumerRecord`` objects (dlq);
:func:`read_window_raw` hands out the records as decoded from the fetched batches, for the
replay, which copies every record of a window and cannot afford a Python object per record.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import FetchResult
from aiokafka.structs import ConsumerRecord

from schemas.config import KafkaSettings
from schemas.errors import ToolError, UnknownTopic
from streams.kafka.connection import client_kwargs

Position = int | datetime
FIRST_FETCH_BYTES = 64 * 1024  # per partition; read_window_raw doubles it with each fetch
# How long a topic that was just created may take to show in the metadata a broker answers
# with (KRaft: the controller has committed it, the broker has not applied it yet), and how
# often it is asked again meanwhile (aiokafka's own retry backoff).
TOPIC_APPEARS_WITHIN_S = 30.0
TOPIC_LOOKUP_EVERY_S = 0.1
_OFFSET = re.compile(r"^\d+$")


def parse_position(text: str, *, option: str) -> Position:
    """``1234`` → an offset (in every partition); an ISO 8601 time → a time (UTC if naive)."""
    value = text.strip()
    if _OFFSET.match(value):
        return int(value)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(
            f"{option} {text!r}: give an offset (e.g. 1200) or an ISO 8601 time "
            "(e.g. 2026-03-01T10:00:00Z)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_time(text: str, *, option: str) -> datetime:
    position = parse_position(text, option=option)
    if isinstance(position, int):
        raise ToolError(f"{option} {text!r}: give an ISO 8601 time")
    return position


@dataclass(frozen=True, slots=True)
class Window:
    ranges: dict[TopicPartition, tuple[int, int]]

    @property
    def size(self) -> int:
        return sum(max(0, end - start) for start, end in self.ranges.values())


def new_consumer(settings: KafkaSettings, **kwargs: object) -> AIOKafkaConsumer:
    """A consumer without a group: it reads what it is told, and commits nothing."""
    return AIOKafkaConsumer(
        **client_kwargs(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kwargs,
    )


async def partitions_of(
    consumer: AIOKafkaConsumer, topic: str, *, appear_within_s: float = 0.0
) -> list[TopicPartition]:
    """The topic's partitions, from fresh metadata; :class:`UnknownTopic` when it has none.

    ``appear_within_s``: for a topic known to exist (the caller has just created it), the
    metadata is asked again until then. A CreateTopics answer means the controller has the
    topic, not that the broker answering a Metadata request has applied it yet: on the
    shared single-node KRaft broker of the tests, the batcher's journal, read right after its
    creation, was missing from the metadata in 17 of 20 starts while the broker was busy and
    in 1 of 40 under CPU load alone."""
    deadline_s = time.monotonic() + appear_within_s
    while True:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        if time.monotonic() >= deadline_s:
            raise UnknownTopic(topic)
        await asyncio.sleep(TOPIC_LOOKUP_EVERY_S)


async def _bound(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    position: Position | None,
    *,
    default: dict[TopicPartition, int],
    low: dict[TopicPartition, int],
    high: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Per partition, the offset of ``position``: an offset clamped into ``[low, high]`` (a
    partition shorter than it contributes nothing), a time's first offset at or after it
    (``high`` when there is none), or ``default`` when there is no bound."""
    if position is None:
        return dict(default)
    if isinstance(position, int):
        return {tp: min(max(position, low[tp]), high[tp]) for tp in tps}
    millis = int(position.timestamp() * 1000)
    found = await consumer.offsets_for_times({tp: millis for tp in tps})
    return {tp: (found[tp].offset if found.get(tp) else high[tp]) for tp in tps}


async def window(
    consumer: AIOKafkaConsumer,
    topic: str,
    start: Position | None = None,
    end: Position | None = None,
    *,
    partitions: list[TopicPartition] | None = None,
) -> Window:
    """The per-partition ``[start, end)`` of ``topic`` for these bounds, fixed now
    (``partitions``: the topic's, when the caller has just looked them up)."""
    tps = partitions if partitions is not None else await partitions_of(consumer, topic)
    low, high = await asyncio.gather(consumer.beginning_offsets(tps), consumer.end_offsets(tps))
    starts, ends = await asyncio.gather(
        _bound(consumer, tps, start, default=low, low=low, high=high),
        _bound(consumer, tps, end, default=high, low=low, high=high),
    )
    return Window({tp: (starts[tp], max(starts[tp], ends[tp])) for tp in tps})


async def read_window(
    consumer: AIOKafkaConsumer, win: Window, *, max_records: int = 10_000
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Yield the window's records in batches (per partition in offset order).

    Each call asks for no more records than the window has left. A fetch returns up to
    ``max_partition_fetch_bytes`` per partition, and aiokafka turns each record it hands out
    into a ``ConsumerRecord``: asking for 10,000 when 1,000 were left built some 14,000
    objects past a small window's end (most of a 1,000-record replay's own time), only to
    drop them. One call still drains every partition (per-partition calls were tried: the
    fetcher then refetches one partition at a time, and a 100,000-record replay was slower).
    """
    todo = _assign(consumer, win)
    following = {tp: win.ranges[tp][0] for tp in todo}  # next offset to read
    while todo:
        left = sum(todo[tp] - following[tp] for tp in todo)
        batches = await consumer.getmany(
            *todo, timeout_ms=1000, max_records=max(1, min(left, max_records))
        )
        for tp, records in batches.items():
            end = todo.get(tp, 0)
            if records:
                following[tp] = records[-1].offset + 1
            inside = [r for r in records if r.offset < end]
            if inside:
                yield inside
            if records and records[-1].offset + 1 >= end:
                todo.pop(tp, None)
                consumer.pause(tp)
        await _drop_finished(consumer, todo, list(todo))


def _assign(consumer: AIOKafkaConsumer, win: Window) -> dict[TopicPartition, int]:
    """Assign the window's non-empty partitions at their starts; their ends, to read up to."""
    todo = {tp: end for tp, (start, end) in win.ranges.items() if end > start}
    if todo:
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, win.ranges[tp][0])
    return todo


async def _drop_finished(
    consumer: AIOKafkaConsumer, todo: dict[TopicPartition, int], tps: Iterable[TopicPartition]
) -> None:
    """Pause and drop those of ``tps`` whose position reached their end: also the way out
    when a compacted topic has no record at ``end - 1`` to tell it."""
    for tp in tps:
        if await consumer.position(tp) >= todo[tp]:
            todo.pop(tp)
            consumer.pause(tp)


class RawRecord(Protocol):
    """A record as aiokafka decodes it from a fetched batch (its C ``DefaultRecord``)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> list[tuple[str, bytes]]: ...


def _between(batch: Iterable[RawRecord], start: int, end: int) -> Iterator[RawRecord]:
    """The records of a batch that straddles a bound (offsets ascend within a batch)."""
    for record in batch:
        offset = record.offset
        if offset >= end:
            return
        if offset >= start:
            yield record


class _Fetched:
    """What the consumer's background fetcher has buffered, taken as whole record batches.

    aiokafka's ``getmany`` turns each record into a ``ConsumerRecord`` (a Python object, ~2 µs,
    most of a replay's CPU per record: bench/replay). This takes the fetcher's buffered result
    per partition as it is, moves the partition's position past it (what ``getmany`` does) and
    wakes the fetcher, which then sends the next fetch while the caller copies these records.
    It relies on aiokafka 0.14's fetcher internals (pinned in pyproject.toml); the replay's
    integration tests fail if they change.
    """

    def __init__(self, consumer: AIOKafkaConsumer, first_fetch_bytes: int) -> None:
        self.fetcher: Any = consumer._fetcher
        self.fetch_bytes_max: int = self.fetcher._max_partition_fetch_bytes
        self.fetcher._max_partition_fetch_bytes = min(first_fetch_bytes, self.fetch_bytes_max)

    def grow(self) -> None:
        """Double the bytes the next fetch asks for per partition, up to the consumer's
        ``max_partition_fetch_bytes``."""
        size = self.fetcher._max_partition_fetch_bytes
        if size < self.fetch_bytes_max:
            self.fetcher._max_partition_fetch_bytes = min(2 * size, self.fetch_bytes_max)

    def take(self, tps: Collection[TopicPartition]) -> list[tuple[TopicPartition, int, list[Any]]]:
        """(partition, offset the fetch started at, its data batches) per buffered partition
        of ``tps``; raises what the fetcher failed with, as ``getmany`` does.

        What was fetched for other partitions (finished ones: a fetch was in flight when they
        were paused) is dropped: while any result waits in its buffer, the fetcher sends that
        broker no fetch for up to 100 ms (its prefetch backoff), so the partitions still
        being read stalled too.
        """
        buffered = self.fetcher._records
        for tp in [tp for tp in buffered if tp not in tps]:
            del buffered[tp]
            self._wake()
        taken = []
        for tp in [tp for tp in tps if tp in buffered]:
            result = buffered.pop(tp)
            self._wake()
            if type(result) is not FetchResult:
                result.check_raise()  # a FetchError: out of range, authorization, too large
            if not result.check_assignment(tp):  # paused or sought since it was fetched
                continue
            part = result._partition_records
            start = part.next_fetch_offset
            memory, batches, following = part._records, [], start
            while memory.has_next():
                batch = memory.next_batch()
                following = max(following, batch.next_offset)
                if not batch.is_control_batch:  # transaction markers are not records
                    batches.append(batch)
            part.next_fetch_offset = following
            result._update_position()  # the partition's position: where the next fetch starts
            taken.append((tp, start, batches))
        return taken

    def _wake(self) -> None:
        self.fetcher._notify(self.fetcher._wait_consume_future)

    async def wait(self, timeout_s: float) -> bool:
        """Wait until the fetcher has buffered something; False on timeout."""
        waiter = self.fetcher._create_fetch_waiter()
        done, _ = await asyncio.wait([waiter], timeout=timeout_s)
        if not done:
            waiter.cancel()
        return bool(done)


async def read_window_raw(
    consumer: AIOKafkaConsumer,
    win: Window,
    *,
    wait_s: float = 1.0,
    first_fetch_bytes: int = FIRST_FETCH_BYTES,
) -> AsyncIterator[tuple[int, Iterable[RawRecord]]]:
    """Yield ``(partition, records)`` covering the window exactly, per partition in offset
    order; each ``records`` is an iterator, to be read once.

    Whole fetched batches inside the window are handed out as they are; only a batch across
    a bound is filtered, and decoding stops at the window's end, so records past it are never
    decoded. CRCs are not checked (librdkafka's default: the broker checked each batch).

    Fetches start at ``first_fetch_bytes`` per partition and double with each one, up to the
    consumer's ``max_partition_fetch_bytes``: a small window needs a fraction of one full
    fetch (a 1,000-record replay spent ~30 ms on a first 8 MiB fetch over 8 partitions), and
    a large one starts copying sooner.
    """
    todo = _assign(consumer, win)
    if not todo:
        return
    fetched = _Fetched(consumer, first_fetch_bytes)
    while todo:
        taken = fetched.take(todo.keys())
        if taken:
            fetched.grow()  # before the fetcher builds its next request
        if not taken and not await fetched.wait(wait_s):
            await _drop_finished(consumer, todo, list(todo))
            continue
        for tp, start, batches in taken:
            end = todo[tp]
            for batch in batches:
                if batch.next_offset <= start:
                    continue
                # Message format v0/v1 batches (brokers before 4.0) have no base offset.
                first = getattr(batch, "base_offset", None)
                if first is not None and first >= end:
                    break
                if first is not None and first >= start and batch.next_offset <= end:
                    yield tp.partition, batch
                else:
                    yield tp.partition, _between(batch, start, end)
            await _drop_finished(consumer, todo, [tp])
