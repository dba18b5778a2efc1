"""``hookstream replay``: re-inject a window of a topic into the pipeline, marked as a replay.

The window (``--from``/``--to``, offsets or times; see :mod:`streams.kafka.reader`) is fixed at
start. Each selected record is written again to the same topic and partition, with its key,
value and headers, plus ``hookstream-replay: <replay id>`` (:mod:`schemas.headers`): the stages
carry that header from events to enriched to results, the AI stage may answer from its cache,
and each sink decides by its ``deliver_replays`` whether replayed results reach it.

Filters (``--source``, ``--type``, ``--flow``) read the value: a CloudEvent on the events topic
(``--flow`` selects the events that flow matches), ``{flow, event, …}`` on enriched and results.
Without filters records are copied without being parsed.

Replaying the events or enriched topic calls the model again for every result not in the cache:
:meth:`Replayer.estimate` counts the calls and tokens that may cost (prompt characters / 4 plus
the flow's ``max_tokens``, an upper bound) so the CLI can ask before it starts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from schemas import templates
from schemas import topics as catalogue
from schemas.config import HookstreamConfig
from schemas.config_flows import FlowConfig
from schemas.errors import BrokerUnavailable, TemplateError
from schemas.headers import REPLAY_HEADER
from streams.kafka.connection import client_kwargs
from streams.kafka.reader import (
    Position,
    Window,
    new_consumer,
    partitions_of,
    read_window_raw,
    window,
)

Progress = Callable[[int, int], None]
BATCH_BYTES = 1024 * 1024  # per partition: fetched at a time, and per producer batch
_PENDING_MAX = 64  # submitted batches not yet acknowledged (≤ 64 MiB in memory)
_PRODUCERS = 2


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    source: str | None = None
    type: str | None = None
    flow: str | None = None

    @property
    def empty(self) -> bool:
        return self.source is None and self.type is None and self.flow is None


@dataclass
class ModelEstimate:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_flow: dict[str, int] = field(default_factory=dict)


@dataclass
class ReplayStats:
    replay_id: str
    window: int = 0
    read: int = 0
    replayed: int = 0
    filtered_out: int = 0
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.replayed / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _event_of(role: str, value: dict[str, Any]) -> dict[str, Any]:
    event = value if role == catalogue.EVENTS else value.get("event")
    return event if isinstance(event, dict) else {}


class Replayer:
    def __init__(
        self,
        config: HookstreamConfig,
        topic: str,
        *,
        start: Position | None,
        end: Position | None,
        selection: ReplayFilter | None = None,
        replay_id: str | None = None,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self.config = config
        self.topic = topic
        self.start = start
        self.end = end
        self.selection = selection or ReplayFilter()
        self.replay_id = replay_id or uuid.uuid4().hex[:12]
        prefix = config.kafka.topic_prefix + "."
        self.role = topic.removeprefix(prefix) if topic.startswith(prefix) else ""
        self.batch_bytes = batch_bytes
        self._window: Window | None = None

    @property
    def calls_model(self) -> bool:
        """Does a replay of this topic reach the AI stage?"""
        return self.role in (catalogue.EVENTS, catalogue.ENRICHED)

    def _flows(self, value: dict[str, Any]) -> list[FlowConfig]:
        if self.role == catalogue.ENRICHED:
            name = value.get("flow")
            return [f for f in self.config.flows if f.name == name]
        event = _event_of(self.role, value)
        return self.config.flows_for(str(event.get("source", "")), str(event.get("type", "")))

    def selects(self, value: dict[str, Any]) -> bool:
        sel = self.selection
        event = _event_of(self.role, value)
        if sel.source is not None and event.get("source") != sel.source:
            return False
        if sel.type is not None and event.get("type") != sel.type:
            return False
        if sel.flow is None:
            return True
        if self.role == catalogue.EVENTS:
            return any(f.name == sel.flow for f in self._flows(value))
        return value.get("flow") == sel.flow

    def _estimate_one(self, value: dict[str, Any], estimate: ModelEstimate) -> None:
        event = _event_of(self.role, value)
        context = {
            "event": event,
            "data": event.get("data"),
            "enrichment": value.get("enrichment") or {},
        }
        for flow in self._flows(value):
            try:
                prompt = templates.render_text(templates.parse(flow.ai.prompt), context)
            except TemplateError:  # enrichment not known yet: the payload's size stands in
                prompt = orjson.dumps(event.get("data")).decode()
            estimate.calls += 1
            estimate.by_flow[flow.name] = estimate.by_flow.get(flow.name, 0) + 1
            estimate.prompt_tokens += (len(flow.ai.system) + len(prompt)) // 4 + 1
            estimate.completion_tokens += flow.ai.max_tokens

    async def _fixed_window(
        self, consumer: Any, partitions: list[TopicPartition] | None = None
    ) -> Window:
        if self._window is None:
            self._window = await window(
                consumer, self.topic, self.start, self.end, partitions=partitions
            )
        return self._window

    @staticmethod
    def _decode(value: bytes | None) -> dict[str, Any]:
        try:
            decoded = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            return {}
        return decoded if isinstance(decoded, dict) else {}

    async def estimate(self) -> tuple[int, ModelEstimate]:
        """(records selected, model calls and tokens) — a read-only pass over the window."""
        consumer = new_consumer(self.config.kafka)
        estimate, selected = ModelEstimate(), 0
        try:
            await consumer.start()
            win = await self._fixed_window(consumer)
            async for _, records in read_window_raw(consumer, win):
                for record in records:
                    value = self._decode(record.value)
                    if self.selection.empty or self.selects(value):
                        selected += 1
                        if self.calls_model:
                            self._estimate_one(value, estimate)
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot read {self.topic}: {exc}") from exc
        finally:
            await consumer.stop()
        return selected, estimate

    async def run(self, progress: Progress | None = None) -> ReplayStats:
        """Re-inject the window; returns once every replayed record is acknowledged (acks=all).

        Records go from the fetched batches (:func:`~streams.kafka.reader.read_window_raw`)
        straight into one producer batch per partition (:class:`_PartitionBatch`): no
        ``ConsumerRecord`` and no ``producer.send`` future per record, which were most of a
        replay's time (bench/replay).
        """
        stats = ReplayStats(self.replay_id)
        settings = self.config.kafka
        # No CRC check on read (librdkafka's default too): the broker checked each batch on
        # write, and the producer computes new CRCs for the copies.
        consumer = new_consumer(
            settings,
            max_partition_fetch_bytes=self.batch_bytes,
            check_crcs=False,
        )
        # Two idempotent producers, each writing half of the partitions (a partition always
        # through the same one, so its order and sequence numbers hold): aiokafka keeps one
        # produce request in flight per connection, and with one producer a replay spent
        # much of its time waiting for acks=all of the request before (bench/replay).
        producers = [
            AIOKafkaProducer(
                **client_kwargs(settings),
                client_id=f"hookstream-replay-{self.replay_id}-{index}",
                acks="all",
                enable_idempotence=True,
                linger_ms=max(settings.linger_ms, 20),
                max_batch_size=self.batch_bytes,
                max_request_size=8 * 1024 * 1024,
            )
            for index in range(_PRODUCERS)
        ]
        marker = (REPLAY_HEADER, self.replay_id.encode())
        only_marker = [marker]
        selection = None if self.selection.empty else self
        decode = self._decode
        started = time.monotonic()
        try:
            # All connect (bootstrap, metadata, the producers' ids) at once: start-up is a
            # fixed cost every replay pays, a third of a 1,000-record one (bench/replay).
            await asyncio.gather(consumer.start(), *(p.start() for p in producers))
            # The producers learn the topic's leaders while the window is fixed, not on their
            # first batch, which would wait for it; only once the consumer has seen that the
            # topic exists (its metadata request lists every topic), as a producer's names it,
            # which creates a mistyped topic on a broker with auto.create.topics.enable.
            partitions = await partitions_of(consumer, self.topic)
            win, *_ = await asyncio.gather(
                self._fixed_window(consumer, partitions),
                *(p.partitions_for(self.topic) for p in producers),
            )
            stats.window = win.size
            writer = _Writer(producers, self.topic)
            async for partition, records in read_window_raw(consumer, win):
                batch = writer.batch(partition)
                append, count, read = batch.append, batch.count, 0
                for record in records:
                    read += 1
                    value = record.value
                    if selection is not None and not selection.selects(decode(value)):
                        stats.filtered_out += 1
                        continue
                    headers = record.headers
                    if headers:
                        headers = [h for h in headers if h[0] != REPLAY_HEADER]
                        headers.append(marker)
                    else:
                        headers = only_marker
                    if append(count, None, record.key, value, headers) is None:  # full
                        batch.count = count
                        batch = await writer.submit(partition)
                        append, count = batch.append, 0
                        # An empty batch takes any record; one over the broker's limit
                        # fails its send.
                        append(0, None, record.key, value, headers)
                    count += 1
                batch.count = count
                stats.read += read
                stats.replayed = stats.read - stats.filtered_out
                if progress is not None:
                    progress(stats.read, stats.window)
            await writer.finish()
        except KafkaError as exc:
            raise BrokerUnavailable(f"replay of {self.topic} failed: {exc}") from exc
        finally:
            await asyncio.gather(*(p.stop() for p in producers))
            await consumer.stop()
        stats.elapsed_s = time.monotonic() - started
        if progress is not None:
            progress(stats.read, stats.window)
        return stats


class _PartitionBatch:
    """A producer batch (``producer.create_batch()``) filled through its record builder.

    ``BatchBuilder.append`` is a Python wrapper costing ~0.5 µs per record around the C
    builder's ``append(offset, timestamp, key, value, headers)``; the replay calls the latter
    with the record's index in the batch and tells the batch its count before it is sent
    (``record_count()`` advances the idempotent producer's sequence numbers). aiokafka 0.14
    internals, pinned in pyproject.toml; the replay's integration tests fail if they change.
    """

    __slots__ = ("append", "batch", "count")

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.batch: Any = producer.create_batch()
        self.append: Callable[..., Any] = self.batch._builder.append
        self.count = 0

    def close(self) -> Any:
        self.batch._relative_offset = self.count
        self.batch.close()
        return self.batch


class _Writer:
    """One open batch per partition, sent by the partition's producer (partition modulo the
    number of producers); at most ``_PENDING_MAX`` sent batches wait for their acks."""

    def __init__(self, producers: list[AIOKafkaProducer], topic: str) -> None:
        self.producers = producers
        self.topic = topic
        self.open: dict[int, _PartitionBatch] = {}
        self.pending: deque[asyncio.Future[Any]] = deque()

    def _producer(self, partition: int) -> AIOKafkaProducer:
        return self.producers[partition % len(self.producers)]

    def batch(self, partition: int) -> _PartitionBatch:
        """The partition's open batch (a new one if it has none)."""
        batch = self.open.get(partition)
        if batch is None:
            batch = self.open[partition] = _PartitionBatch(self._producer(partition))
        return batch

    async def submit(self, partition: int) -> _PartitionBatch:
        """Send the partition's batch; returns its next, empty one."""
        await self._send(partition)
        return self.batch(partition)

    async def _send(self, partition: int) -> None:
        batch = self.open.pop(partition).close()
        producer = self._producer(partition)
        self.pending.append(await producer.send_batch(batch, self.topic, partition=partition))
        while len(self.pending) > _PENDING_MAX:
            await self.pending.popleft()

    async def finish(self) -> None:
        """Send every open batch that has records and wait until all are acknowledged."""
        for partition, batch in list(self.open.items()):
            if batch.count:
                await self._send(partition)
        while self.pending:
            await self.pending.popleft()
