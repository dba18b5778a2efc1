"""What the sinks delivered, remembered durably and shared by every sink worker.

Each successful delivery is written — after the target accepted it and before the result is
acked — to the compacted topic ``<prefix>.delivered``, keyed by its idempotency key, with the
receipt as value. Before delivering, a sink asks :meth:`DeliveredMemory.outcome`: a result
redelivered after a crash or a rebalance (at-least-once inside) is then skipped instead of being
sent again (effectively once outside).

Every sink process tails the whole topic into a map of keys to outcomes. The sink worker's
memory is caught up once per partition assignment (``per_assignment``, below); otherwise a check
first makes sure this process has read the key's partition up to its current end (one
ListOffsets request), so a delivery made a moment ago by another worker — the partition's
previous owner — is seen too. That request goes through a client of its own: a broker answers
one connection's requests in order, and on the tail's connection it waited behind the tail's
long-polling fetch, up to the fetch's maximum wait (500 ms) before each first delivery of a
result. A key lands on the partition Kafka's default partitioner picks for it (murmur2), which
is how the check knows which partition to catch up on. Checks made at the same time share their
ListOffsets request (one request for every partition asked about, issue 16: one per check was a
fifth of the sink worker's CPU), never one sent before the check began: while a request is out,
new checks wait for the next one, so each still sees every delivery made before it started.

With ``per_assignment`` (the sink worker's, :mod:`agents.sinks.wiring`) there is no request per
check. Another worker can only have delivered a result of a partition this worker owns before
this worker was given that partition: a rebalance waits for every delivery in flight to be
remembered (:meth:`agents.sinks.consumer.SinkConsumer.on_partitions_revoked`), and a killed
worker delivers nothing after it dies.
So after each assignment (:meth:`DeliveredMemory.assigned`) the first check reads the ends of
every partition of the memory (one ListOffsets request, sent after the assignment began) and
waits for the tail to reach them; from then on, until the next assignment, checks are answered
from the map, which also holds this worker's own deliveries as soon as they are acknowledged. At
about 700 deliveries/s that request and the tail's catching up on this worker's own entries
before each check were a fifth of the sink worker's CPU (issue 16). What this leaves out: a
worker that lost its partitions without knowing it (stalled past the session timeout) and still
delivers; a check made per delivery would see only its deliveries made before the check, this
one only those made before the assignment. Either way its duplicate carries the same
Idempotency-Key. The tail then need not be prompt, so it fetches like the worker's maps (64 KiB or
100 ms, whichever comes first).

The topic is compacted with a retention of a week (``schemas.topics.TOPIC_CONFIGS``): a result
redelivered more than a week later would be sent again, with the same Idempotency-Key.

With ``per_assignment`` the deliveries are written several to a record
(:class:`agents.state.pass_batch.PassBatcher`, issue 16): those remembered while the event loop
runs one pass go to Kafka as one record, ``deliveries/<random id>`` →
``{"delivered":[key, …]}``, each :meth:`DeliveredMemory.remember` returning once that record
and the stage's receipt are acknowledged, as before for a record of its own; the receipt is no
longer the entry's value (nothing read it there: ``<prefix>.receipts`` has it). A record per
delivery was a second record per result written by the sink worker and read back by every sink
worker's tail; in the sinks benchmark a record held 17-19 entries. Only with
``per_assignment``: a check without it reads only its key's partition, and a batch record
lands on its own key's. Entries of a record of their own (older versions, dead letters) are
still read. A sink worker of an older version reads a batch record as one delivered key
``deliveries/<id>``, not the keys in it: during a rolling upgrade, a result delivered by a new
worker and redelivered to an old one (a rebalance between its delivery and its commit) is sent
again, with the same Idempotency-Key. Records of several partitions are read in no particular
order, so a delivery is final: a dead-letter entry read after it does not undo it.

It also remembers what a sink dead-lettered (a value starting ``{"dead_lettered":``): a result
redelivered after a crash that came between its dead letter and its ack is then skipped, not
tried and dead-lettered a second time. A later delivery (after a redrive) overwrites that
entry with its receipt, compaction keeping the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from agents.emit import Record, emit, emit_all
from agents.refcount import RefCounted
from agents.state.pass_batch import PassBatcher
from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable
from streams.kafka.compacted import CompactedReader, stop_quietly
from streams.kafka.connection import client_kwargs
from streams.kafka.producer import KafkaWriter

log = logging.getLogger(__name__)
Outcome = Literal["delivered", "dead_lettered"]
DELIVERED: Outcome = "delivered"
DEAD_LETTERED: Outcome = "dead_lettered"
_DEAD_LETTER_MARK = b'{"dead_lettered":'
# A batch record's value (the module doc): {"delivered":[key, …]}
_BATCH_MARK = b'{"delivered":'
BATCH_PREFIX = "deliveries/"
_ENDS_CLIENT = "the delivered-memory's end-offsets client"


def _outcome(value: bytes | None) -> Outcome:
    return DEAD_LETTERED if value is not None and value.startswith(_DEAD_LETTER_MARK) else DELIVERED


class DeliveredMemory(RefCounted):
    """Ref-counted async context manager: the first user starts the tail, the last stops it."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        per_assignment: bool = False,
        tail_fetch_min_bytes: int = 1,
        tail_fetch_max_wait_ms: int = 500,
    ) -> None:
        """``per_assignment``: catch up once after each :meth:`assigned`, not at each check
        (the module doc says when that is enough)."""
        super().__init__()
        self.settings = settings
        self.topic = topic
        self.per_assignment = per_assignment
        self.tail_fetch_min_bytes = tail_fetch_min_bytes
        self.tail_fetch_max_wait_ms = tail_fetch_max_wait_ms
        # per_assignment: the assignment counted, the last one caught up on, the catch-up going
        self._assignment = 0
        self._caught_up = -1
        self._catching_up: tuple[int, asyncio.Task[None]] | None = None
        self._outcomes: dict[bytes, Outcome] = {}
        self._reader: CompactedReader | None = None
        self._ends: AIOKafkaConsumer | None = None  # ListOffsets only (see the module doc)
        # partition -> the checks waiting for the next ListOffsets request; the task asking
        self._wanted: dict[int, list[asyncio.Future[int]]] = {}
        self._asking: asyncio.Task[None] | None = None
        self.batches: PassBatcher[str] | None = (
            PassBatcher(topic, BATCH_PREFIX, lambda keys: orjson.dumps({"delivered": keys}))
            if per_assignment
            else None
        )

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        outcomes = self._outcomes
        if value is not None and value.startswith(_BATCH_MARK):
            try:
                keys = orjson.loads(value)["delivered"]
                for delivered in keys:
                    outcomes[delivered.encode()] = DELIVERED
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                log.warning("%s: ignoring a malformed batch record (key %r)", self.topic, key)
            return
        if key is not None:
            outcome = _outcome(value)
            if outcome == DEAD_LETTERED and outcomes.get(key) == DELIVERED:
                return  # a delivery is final (the module doc)
            outcomes[key] = outcome

    async def _start(self) -> None:
        reader = CompactedReader(
            self.settings,
            self.topic,
            self._apply,
            client_id=f"{self.topic}-memory",
            fetch_min_bytes=self.tail_fetch_min_bytes,
            fetch_max_wait_ms=self.tail_fetch_max_wait_ms,
        )
        ends = AIOKafkaConsumer(
            **client_kwargs(self.settings),
            enable_auto_commit=False,
            client_id=f"{self.topic}-memory-ends",
        )
        try:
            await ends.start()
            # Not loaded to the end: each check catches up on its key's partition.
            await reader.start(load=False)
        except BaseException as exc:  # cancelled too: neither client may be left running
            await stop_quietly(ends, _ENDS_CLIENT)
            if isinstance(exc, KafkaError | TimeoutError):
                raise BrokerUnavailable(f"cannot read {self.topic}: {exc}") from exc
            raise
        self._reader, self._ends = reader, ends

    async def _stop(self) -> None:
        reader, ends = self._reader, self._ends
        self._reader = self._ends = None
        asking, self._asking = self._asking, None
        catching_up, self._catching_up = self._catching_up, None
        for task in (asking, catching_up[1] if catching_up is not None else None):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.batches is not None:
            await self.batches.stop()
        if reader is not None:
            await reader.stop()
        if ends is not None:
            await stop_quietly(ends, _ENDS_CLIENT)

    def partition_for(self, key: bytes) -> int:
        partitions = self._reader.partitions if self._reader is not None else []
        return int(DefaultPartitioner()(key, partitions, partitions))

    async def outcome(self, key: str, *, fresh: bool = False) -> Outcome | None:
        """What became of ``key``: delivered, dead-lettered, or nothing yet (None).

        A delivery is final and answered from memory; otherwise the key's partition is read
        up to its current end first, unless ``fresh`` is false and a dead letter is already
        known (a redelivered record need not know whether a redrive has delivered it since).
        With ``per_assignment``, the whole memory is read up to the ends it had after the
        current assignment began, once for every check of that assignment.
        """
        raw = key.encode()
        known = self._outcomes.get(raw)
        if known == DELIVERED or (known is not None and not fresh):
            return known
        if self.per_assignment:
            await self._catch_up_since_assigned()
        else:
            await self._catch_up(self.partition_for(raw))
        return self._outcomes.get(raw)

    def assigned(self) -> None:
        """This worker's partitions were (re)assigned: the next check catches up again."""
        self._assignment += 1

    async def _catch_up_since_assigned(self) -> None:
        """Return once the tail has read every partition up to its end as read after the
        current assignment began; one catch-up shared by every check of the assignment."""
        assignment = self._assignment
        if self._caught_up >= assignment:
            return
        catching_up = self._catching_up
        if catching_up is None or catching_up[0] != assignment:
            task = asyncio.create_task(
                self._catch_up_all(assignment), name=f"catch up {self.topic}"
            )
            self._catching_up = catching_up = (assignment, task)
        try:
            await asyncio.shield(catching_up[1])
        except Exception:
            if self._catching_up is catching_up:
                self._catching_up = None  # the next check tries again
            raise

    async def _catch_up_all(self, assignment: int) -> None:
        reader = self._reader
        if reader is None or self._ends is None:
            raise RuntimeError("DeliveredMemory used outside `async with`")
        tps = [TopicPartition(self.topic, partition) for partition in reader.partitions]
        ends = await self._ask_ends_once(tps)
        for tp, end in ends.items():
            await reader.wait_for_position(tp.partition, end)
        self._caught_up = max(self._caught_up, assignment)

    async def _catch_up(self, partition: int) -> None:
        reader = self._reader
        if reader is None or self._ends is None:
            raise RuntimeError("DeliveredMemory used outside `async with`")
        await reader.wait_for_position(partition, await self._end_offset(partition))

    async def _end_offset(self, partition: int) -> int:
        """The current end of ``partition``, from a ListOffsets request sent after this call
        began, shared with every check waiting at the time (see the module doc)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(partition, []).append(future)
        if self._asking is None or self._asking.done():
            self._asking = asyncio.create_task(self._ask_ends())
        return await future

    async def _ask_ends(self) -> None:
        """Ask for the ends of every partition wanted, again while more are wanted."""
        wanted: dict[int, list[asyncio.Future[int]]] = {}
        try:
            while self._wanted:
                wanted, self._wanted = self._wanted, {}
                offsets = await self._ask_ends_once(
                    [TopicPartition(self.topic, partition) for partition in wanted]
                )
                for tp, end in offsets.items():
                    for future in wanted.pop(tp.partition, ()):
                        if not future.done():
                            future.set_result(end)
        except BaseException as exc:
            # Stopped, or a bug: no check may be left waiting for an answer that never comes.
            failure = RuntimeError(f"the end of {self.topic} could not be read: {exc!r}")
            for futures in (*wanted.values(), *self._wanted.values()):
                for future in futures:
                    if not future.done():
                        future.set_exception(failure)
            self._wanted.clear()
            if not isinstance(exc, Exception):
                raise
            log.exception("reading the end of %s failed", self.topic)

    async def _ask_ends_once(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        ends = self._ends
        if ends is None:
            raise RuntimeError("DeliveredMemory used outside `async with`")
        while True:
            try:
                offsets: dict[TopicPartition, int] = await ends.end_offsets(tps)
                return offsets
            except KafkaError as exc:
                log.warning("cannot read the end of %s (%s); retrying", self.topic, exc)
                await asyncio.sleep(1.0)

    async def remember(self, writer: KafkaWriter, key: str, receipt: bytes, *also: Record) -> None:
        """Record a delivery durably (acks=all); returns once Kafka has it, and ``also`` (the
        stage's receipt): handed to the producer together, so they share its batches and one
        round trip (issue 16), and either may land first. With ``per_assignment`` the entry
        joins this loop pass's batch record (the module doc) and ``receipt`` is not written."""
        raw = key.encode()
        if self.batches is None:
            await emit_all(writer, [Record(self.topic, receipt, raw), *also])
        else:
            written = self.batches.join(writer, key)  # written on the loop's next pass
            await emit_all(writer, also)
            await asyncio.shield(written)
        self._outcomes[raw] = DELIVERED

    async def remember_dead_letter(self, writer: KafkaWriter, key: str, error: str) -> None:
        """Record that ``key`` went to the DLQ (``error``: its class), once the DLQ has it."""
        raw = key.encode()
        value = orjson.dumps({"dead_lettered": True, "error": error})
        await emit(writer, self.topic, value, key=raw)
        self._outcomes[raw] = DEAD_LETTERED

    def __len__(self) -> int:
        return len(self._outcomes)
