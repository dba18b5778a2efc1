"""The sink worker's consumer: one plain aiokafka group consumer feeding a runner per sink.

Why not Faust (issue 16): a bare Faust agent doing the sinks' PUTs already cost 2.1x a bare
consume + PUT loop, so on Faust's consume path the sinks could not come near the loop. The
guarantees Faust gave are kept here, each by the piece named:

- **Commits only what is done, in offset order.** Every record goes to every sink's
  :class:`agents.stages.runner.OrderedRunner` as a :class:`SinkRecord` (the runner's event and
  its message in one object). A runner acks in offset order per partition; a record is done when
  every sink acked it, so the records done form a prefix of each partition, and the offset after
  the last one is what is committed (every ``worker.commit_interval_s``, at a rebalance, at a
  stop). Per-key order and the ``worker.sink_concurrency`` bound are the runner's.
- **Backpressure.** Fetched records wait in one queue per sink; when a queue holds
  :data:`BUFFER_RECORDS` the consumer pauses its partitions (it keeps polling, paused, so the
  group does not count it gone) and resumes them once every queue is below half that.
- **Rebalance.** aiokafka awaits :meth:`SinkConsumer.on_partitions_revoked` before it rejoins:
  the queues are dropped (not handed out, so nothing to ack), the deliveries held at a closed
  outage gate are let go unacked (:meth:`OrderedRunner.release`, repeated every
  :data:`RELEASE_EVERY_S` and whenever a gate's caller begins to wait, as
  ``agents.faust_app.ReleasingApp`` did), every other delivery in flight is waited for, and the
  done prefix is committed. At the assignment the runners take events again and the
  delivered-memory is told (:meth:`DeliveredMemory.assigned`, its per-assignment catch-up).
- **Stop.** SIGTERM or SIGINT: the same release and wait, a last commit, then the consumer
  leaves the group (a static member, ``worker.group_instance_id``, does not).

During a rebalance or a stop the partitions are paused, and polled once a second. A record a
poll returns then is not handed out; its partition is sought back to it, so whichever
assignment it came from reads it again (aiokafka returns only records of the assignment current
when the poll returns, and nothing runs in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from agents import metrics
from agents.sinks.stage import SinkStage
from agents.stages.runner import OrderedRunner
from agents.state.delivered import DeliveredMemory
from schemas.config import HookstreamConfig
from streams.kafka.connection import client_kwargs

log = logging.getLogger(__name__)
# How often the release is repeated while a rebalance or a stop waits (Faust's app: the same).
RELEASE_EVERY_S = 0.2
# How often a rebalance or a stop looks whether every delivery handed out has ended.
SETTLE_POLL_S = 0.02
# Records a sink's queue holds before the partitions are paused; at most one poll's more.
BUFFER_RECORDS = 1000
POLL_RECORDS = 500
POLL_WAIT_MS = 1000
# While paused: how often the consumer polls anyway (a member that stops polling for
# max_poll_interval_ms is put out of the group).
PAUSED_POLL_S = 1.0


class _Shared:
    """How many sinks have still to ack one record (only when there are several)."""

    __slots__ = ("remaining",)

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining


class SinkRecord:
    """One fetched record as one sink's runner sees it: the runner's event (``key``, ``ack``)
    and its message (``event.message``: topic, partition, offset, key, value, headers, a
    timestamp in seconds, ``tp`` and ``acked``, as Faust's had) in one object, one per sink."""

    __slots__ = (
        "_owner",
        "acked",
        "generation",
        "headers",
        "key",
        "offset",
        "partition",
        "shared",
        "timestamp",
        "topic",
        "tp",
        "value",
    )

    def __init__(
        self,
        owner: SinkConsumer,
        record: ConsumerRecord[bytes, bytes],
        tp: TopicPartition,
        shared: _Shared | None,
    ) -> None:
        self._owner = owner
        self.generation = owner.generation
        self.tp = tp
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        self.key = record.key
        self.value = record.value
        self.headers = record.headers
        self.timestamp = record.timestamp / 1000.0
        self.shared = shared
        # Set by ack, or by the runner's release (let go unacked: never committed past).
        self.acked = False

    @property
    def message(self) -> SinkRecord:
        return self

    def ack(self) -> bool:
        """Done by this sink (called by the runner in offset order per partition)."""
        if self.acked:
            return False
        self.acked = True
        self._owner.done(self)
        return True


class SinkConsumer(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs the sink stages over the results topic until :meth:`run`'s ``stop`` is set."""

    def __init__(
        self,
        config: HookstreamConfig,
        memory: DeliveredMemory,
        stages: list[SinkStage],
        *,
        topic: str,
        group_id: str,
    ) -> None:
        self.config = config
        self.memory = memory
        self.stages = stages
        self.topic = topic
        self.group_id = group_id
        max_in_flight = config.worker.sink_concurrency
        self.runners = [OrderedRunner(s.handle, max_in_flight=max_in_flight) for s in stages]
        self.generation = 0  # counts the assignments: a late ack of an earlier one is ignored
        self.ready = False
        self.stopping = False
        self._consumer: AIOKafkaConsumer | None = None
        self._queues: list[deque[SinkRecord]] = [deque() for _ in stages]
        self._wakes = [asyncio.Event() for _ in stages]
        self._room = asyncio.Event()
        self._paused = False
        self._releasing = False
        self._out: set[SinkRecord] = set()  # handed to a runner, neither acked nor let go
        self._done: dict[TopicPartition, int] = {}  # the offset after the done prefix
        self._committed: dict[TopicPartition, int | None] = {}
        self._background: set[asyncio.Task[None]] = set()  # the committed-offset reads
        for stage in stages:
            stage.gate.on_wait = self._release_if_releasing

    def done(self, record: SinkRecord) -> None:
        self._out.discard(record)
        if record.generation != self.generation:
            return
        shared = record.shared
        if shared is not None:
            shared.remaining -= 1
            if shared.remaining:
                return
        self._done[record.tp] = record.offset + 1

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then let go, wait, commit and leave the group."""
        kafka, worker = self.config.kafka, self.config.worker
        session_ms = int(worker.session_timeout_s * 1000)
        consumer = AIOKafkaConsumer(
            **client_kwargs(kafka),  # TLS and SASL, as every client of hookstream
            group_id=self.group_id,
            group_instance_id=worker.group_instance_id,
            client_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=int(worker.heartbeat_s * 1000),
            request_timeout_ms=max(40_000, session_ms + 5_000),
            # A rebalance waits for the deliveries in flight (Faust's default, kept).
            rebalance_timeout_ms=60_000,
        )
        consumer.subscribe([self.topic], listener=self)
        self._consumer = consumer  # before start: its first assignment may come during it
        try:
            await consumer.start()
        except BaseException:
            self._consumer = None
            await consumer.stop()
            raise
        tasks: list[asyncio.Task[None]] = []
        try:
            for stage in self.stages:
                name = f"hookstream.sink.{stage.flow}.{stage.sink_config.name}"
                log.info("agent %s running with max %d in flight", name, worker.sink_concurrency)
            self.ready = True
            # The line Faust's worker logged here: scripts and tests wait for it.
            log.info("[^Worker]: Ready")
            tasks.append(asyncio.create_task(self._fetch(consumer), name="sinks fetch"))
            tasks.append(asyncio.create_task(self._commit_every(), name="sinks commit"))
            for index, runner in enumerate(self.runners):
                tasks.append(asyncio.create_task(runner.run(self._feed(index))))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            self.stopping = True
            log.info("stopping: letting go of waiting deliveries, waiting for the others")
            tasks[0].cancel()
            await self._settle()
            await self._commit()
        finally:
            self.stopping = True
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self._consumer = None
            await consumer.stop()
        for result in results:  # a task that failed (not cancelled) fails the process
            if isinstance(result, Exception):
                raise result

    # --- fetching and feeding -----------------------------------------------------------------

    def _full(self) -> bool:
        return any(len(queue) >= BUFFER_RECORDS for queue in self._queues)

    async def _fetch(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            if self._releasing or self._full():
                # Paused: a rebalance or a stop is under way, or the queues are full.
                if not self._paused:
                    consumer.pause(*consumer.assignment())
                    self._paused = True
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), PAUSED_POLL_S)
                if self._releasing or self._full():
                    self._enqueue(consumer, await consumer.getmany(timeout_ms=0))
                    continue
            if self._paused:
                consumer.resume(*consumer.assignment())
                self._paused = False
            polled = await consumer.getmany(timeout_ms=POLL_WAIT_MS, max_records=POLL_RECORDS)
            self._enqueue(consumer, polled)

    def _enqueue(
        self,
        consumer: AIOKafkaConsumer,
        polled: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> None:
        if self._releasing:  # not handed out: read again (see the module doc)
            for tp, records in polled.items():
                if records:
                    with contextlib.suppress(IllegalStateError, AssertionError):
                        consumer.seek(tp, records[0].offset)
            return
        queues = self._queues
        sinks = len(queues)
        for tp, records in polled.items():
            for record in records:
                shared = _Shared(sinks) if sinks > 1 else None
                for queue in queues:
                    queue.append(SinkRecord(self, record, tp, shared))
        if polled:
            for wake in self._wakes:
                wake.set()

    async def _feed(self, index: int) -> AsyncIterator[SinkRecord]:
        queue, wake, out = self._queues[index], self._wakes[index], self._out
        resume_below = BUFFER_RECORDS // 2
        while True:
            if not queue:
                wake.clear()
                await wake.wait()
                continue
            record = queue.popleft()
            if self._paused and len(queue) < resume_below:
                self._room.set()
            out.add(record)
            yield record

    # --- rebalances, stops and commits --------------------------------------------------------

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        """Awaited by aiokafka before it rejoins: release, wait, commit (the module doc)."""
        revoked = set(revoked)
        if revoked:
            log.info(
                "rebalance: %d partitions revoked; letting go of waiting deliveries", len(revoked)
            )
        await self._settle()
        await self._commit()
        self._done.clear()
        self._committed.clear()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = set(assigned)
        self.generation += 1
        self._paused = False  # a new assignment's partitions start unpaused
        self.memory.assigned()  # before any event of the assignment is handled
        if not self.stopping:
            self._releasing = False
            for runner in self.runners:
                runner.resume()
            self._room.set()  # the fetch loop resumes the partitions now
        log.info("assigned %d partitions of %s", len(assigned), self.topic)
        if self._consumer is not None and assigned:
            # Kept referenced until done: the loop holds only a weak reference to a task.
            task = asyncio.get_running_loop().create_task(self._read_committed(assigned))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _settle(self) -> None:
        """Until every record handed to a runner is acked or let go: release the ones that
        only wait (at a closed gate, behind their key, for a slot), let the others finish."""
        self._releasing = True
        for queue in self._queues:
            queue.clear()
        released_s = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() >= released_s:
                self._release()
                released_s = loop.time() + RELEASE_EVERY_S
            self._out = {record for record in self._out if not record.acked}
            if not self._out:
                return
            await asyncio.sleep(SETTLE_POLL_S)

    def _release(self) -> None:
        for stage, runner in zip(self.stages, self.runners, strict=True):
            runner.release(stage.busy)

    def _release_if_releasing(self) -> None:
        """A gate's caller begins to wait: during a rebalance or a stop, let it go now, not at
        the next tick (a retry's pause can be shorter than one)."""
        if self._releasing:
            self._release()

    async def _commit_every(self) -> None:
        while True:
            await asyncio.sleep(self.config.worker.commit_interval_s)
            if not self._releasing:
                await self._commit()

    async def _commit(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self._done.items()
            if tp in assigned and self._committed.get(tp) != offset
        }
        if not offsets:
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except (KafkaError, IllegalStateError) as exc:
            # Redone by the partition's next reader (delivered-memory: skipped there).
            log.warning("commit of %s failed (%s); the next one carries it", self.topic, exc)
            return
        self._committed.update(offsets)

    async def _read_committed(self, assigned: set[TopicPartition]) -> None:
        """The group's committed offsets at the assignment, for the lag metric only."""
        consumer = self._consumer
        for tp in sorted(assigned):
            if consumer is None or tp in self._committed:
                continue
            try:
                offset = await consumer.committed(tp)
            except (KafkaError, IllegalStateError):
                return
            self._committed.setdefault(tp, offset)

    def lag(self) -> list[tuple[str, int, int]]:
        """(topic, partition, high watermark minus committed offset) per partition assigned
        whose high watermark is known: ``hookstream_consumer_lag_records``."""
        consumer = self._consumer
        return [] if consumer is None else metrics.partition_lags(consumer, self._committed)
