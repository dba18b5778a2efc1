"""A :class:`KafkaWriter` for many concurrent small writes: one batch per partition, one ack each.

Why: the gateway writes one record per webhook, and aiokafka's ``send()`` costs ~35 µs of CPU
per record (metadata check, partitioner, accumulator, one future and one RecordMetadata per
record, a callback chain per ack), as much as aiohttp's whole request. A single process doing
a few thousand webhooks a second spends a third of its CPU there.

How: :meth:`BatchingKafkaWriter.send` only picks the partition (murmur2 of the key, exactly
aiokafka's and the Java client's default partitioner), appends the record to that partition's
pending list and waits on its own future. One background task writes in *rounds*: it takes
everything pending, builds one ``BatchBuilder`` per partition (``producer.create_batch()``),
submits each with ``producer.send_batch()`` and waits for the acks; the records that arrived
meanwhile form the next round. There is no linger: a lone write goes out at once, and under
load a round holds whatever accumulated while the previous one was in flight (the same
shape as aiokafka's own accumulator, which also sends one request at a time per broker).

Guarantees kept from :class:`KafkaWriter`: acks=all with the idempotent producer (same
producer, same settings); a caller's future resolves only from the broker's acknowledgement of
the batch holding its record, with that record's own offset (base offset + its index in the
batch); a failed batch fails every record in it; per-key order (records of one partition are
appended in arrival order, and a partition has at most one batch of ours per round); the
deadline per write (``produce_timeout_s``), after which the caller gets BrokerUnavailable
and a record not yet in a batch is dropped rather than written late. A producer whose
idempotence state broke is replaced, as in :class:`KafkaWriter`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
from typing import Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata, TopicPartition

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable, RecordTooLarge
from streams.kafka.partitioner import murmur2
from streams.kafka.producer import (
    BROKEN_PRODUCER_ERRORS,
    MAX_REQUEST_BYTES,
    Headers,
    KafkaWriter,
    PendingWrite,
    retrieve_failure,
)
from streams.kafka.size_limits import (
    BATCH_HEADER_BYTES,
    TopicSizeLimits,
    describe_max_message_bytes,
    lone_record_bytes,
    record_bytes_max,
)

log = logging.getLogger(__name__)

# (value, key, headers, caller's future): a tuple, the cheapest record of a pending write.
_Entry = tuple[bytes, bytes | None, Headers, "asyncio.Future[RecordMetadata]"]
# A batch with the producer: (its acknowledgement, the records in it, their timestamps in ms,
# its (topic, partition)).
_Batch = tuple["asyncio.Future[Any]", list[_Entry], list[int], tuple[str, int]]
_HASH_CACHE_SIZE = 65536  # distinct keys whose murmur2 hash is kept (keys repeat: customers)


class BatchingKafkaWriter(KafkaWriter):
    """:class:`KafkaWriter` with the same ``send()`` and ``write()`` contracts, written in
    per-partition batches.

    Used by the gateway (``send``/``submit``) and by the worker and sink processes
    (``write``/``outcome``, through :mod:`agents.emit`): aiokafka's ``send()`` was ~11 % of the
    worker's CPU per event, for 2.4 records per event (bench/pipeline, issue 16). Per-key order
    is kept (records of a partition go in arrival order, one batch per partition per round).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        client_id: str = "hookstream",
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        # Partitions per topic, as the producer's metadata last said: asking the metadata per
        # write builds a set of them each time. Forgotten on every metadata update. Set before
        # KafkaWriter.__init__, which makes the first producer (see _new_producer).
        self._partition_counts: dict[str, int] = {}
        super().__init__(settings, client_id=client_id, max_request_bytes=max_request_bytes)
        self._pending: dict[tuple[str, int], list[_Entry]] = {}
        self._wake: asyncio.Future[None] | None = None
        self._rounds: asyncio.Task[None] | None = None
        self._hashes: dict[bytes, int] = {}
        # (deadline on the loop's clock, caller's future) in send order: with one deadline for
        # every write, the oldest is always due first, so one timer serves them all (a
        # call_later per write cost ~3 µs of the gateway's hot path).
        self._deadlines: collections.deque[tuple[float, asyncio.Future[RecordMetadata]]] = (
            collections.deque()
        )
        self._sweeper: asyncio.TimerHandle | None = None
        self._metadata_fetches: set[asyncio.Task[None]] = set()
        # Batches with a producer, not yet acknowledged or failed: (the producer, its records).
        # A producer stopped before answering them (replaced, or this writer stopping) never
        # will; their records fail then, so that a write() waiting on one is given up.
        self._unsettled: dict[asyncio.Future[Any], tuple[Any, list[_Entry]]] = {}
        # Producers being replaced after a batch that ended late (_ended_late); cancelled by stop.
        self._late_replacements: set[asyncio.Task[None]] = set()
        # Each topic's max.message.bytes, learned from the broker's refusals (size_limits).
        self._limits = TopicSizeLimits()
        self.batches_sent = 0  # for tests and the benchmark's notes: records per batch
        self.records_sent = 0

    def _new_producer(self) -> Any:
        producer = super()._new_producer()
        producer.client.cluster.add_listener(self._metadata_updated)
        return producer

    def _metadata_updated(self, cluster: Any) -> None:
        self._partition_counts.clear()  # a topic may have gained partitions

    async def start(self) -> None:
        await super().start()
        self._wake = asyncio.get_running_loop().create_future()
        self._rounds = asyncio.create_task(self._write_rounds(), name="kafka-batch-writer")

    async def stop(self) -> None:
        """Stop taking writes; fail what never made it into a batch; flush what did."""
        rounds, self._rounds = self._rounds, None
        if rounds is not None:
            rounds.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rounds
        for fetch in list(self._metadata_fetches):  # their callers are expired below
            fetch.cancel()
        for replacing in list(self._late_replacements):  # a fresh producer is stopped
            replacing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replacing
        pending, self._pending = self._pending, {}
        for entries in pending.values():
            _fail(entries, BrokerUnavailable("the Kafka producer is stopping"))
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().stop()  # flushes: the batches it holds are acknowledged or fail
        # Belt and braces: whoever is still waiting now would wait forever.
        stopped = BrokerUnavailable("the Kafka producer stopped before acknowledging")
        while self._deadlines:
            _expire(self._deadlines.popleft()[1], stopped)
        self._settle_stopped(None)

    async def write(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> PendingWrite:
        """:meth:`KafkaWriter.write`'s contract, the record joining the next round.

        No deadline of its own: the write is done once the batch holding it is acknowledged,
        or failed (the producer gave it up, or stopped before answering: then, and only then,
        ``given_up``). The caller bounds each wait with :meth:`outcome`. A topic without
        metadata yet waits for it up to ``produce_timeout_s``, then fails (never queued).
        """
        waiter = self.submit(
            topic, value, key=key, headers=headers, deadline_s=self.settings.produce_timeout_s
        )
        waiter.add_done_callback(retrieve_failure)
        return _RoundWrite(waiter, self._producer)

    def _retired(self, producer: Any) -> None:
        self._settle_stopped(producer)

    def _settle_stopped(self, producer: Any) -> None:
        """Fail the records of the batches ``producer`` (None: any) held when it stopped."""
        stopped = BrokerUnavailable("the Kafka producer stopped before acknowledging")
        for ack, (holder, entries) in list(self._unsettled.items()):
            if producer is None or holder is producer:
                del self._unsettled[ack]
                _fail(entries, stopped)

    def _partition(self, key: bytes | None, count: int) -> int:
        if key is None:
            return random.randrange(count)  # noqa: S311 - spreading load, not security
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= _HASH_CACHE_SIZE:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return hashed % count

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        timeout_s: float | None = None,
    ) -> RecordMetadata:
        """Write one record and wait for the broker's acknowledgement (see KafkaWriter.send)."""
        if timeout_s is None:
            return await self.submit(topic, value, key=key, headers=headers)
        # A deadline of its own: out of send order, so a timer of its own.
        waiter = self.submit(topic, value, key=key, headers=headers, deadline_s=timeout_s)
        timer = asyncio.get_running_loop().call_later(timeout_s, _expire, waiter, _late(timeout_s))
        try:
            return await waiter
        finally:
            timer.cancel()

    def submit(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        deadline_s: float | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record for the next round; the future is its acknowledgement.

        Why a future rather than a coroutine: the gateway answers from a callback on it, with
        no task per webhook. It resolves to the record's metadata or fails with
        :class:`BrokerUnavailable` or :class:`RecordTooLarge`, never anything else, by
        ``produce_timeout_s`` at the latest (``deadline_s`` is the caller's own timer's).
        Raises the same two errors at once when the record cannot be queued.
        """
        if self._rounds is None or self._wake is None:
            raise BrokerUnavailable("the Kafka producer is not running")
        if type(headers) is not list:  # aiokafka's C record builder takes lists only
            headers = list(headers)
        if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) > (
            self.max_request_bytes
        ):
            raise RecordTooLarge(
                f"the record is {len(value)} bytes, over Kafka's request size limit"
            )
        if self._limits.learned:  # a topic refused a batch as too large (size_limits)
            bounds = self._limits.bounds(topic)
            if bounds is not None:
                refused = self._limits.check(topic, bounds[1], key, value, headers)
                if refused is not None:
                    raise refused
        count = self._partition_counts.get(topic)
        if count is None:
            partitions = self._producer.client.cluster.partitions_for_topic(topic)
            if not partitions:  # the topic's first write: its metadata has to be fetched
                return self._submit_after_metadata(topic, value, key, headers, deadline_s)
            count = self._partition_counts[topic] = len(partitions)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[RecordMetadata] = loop.create_future()
        self._enqueue((topic, self._partition(key, count)), (value, key, headers, waiter))
        if deadline_s is None:
            self._add_deadline(loop, waiter)
        return waiter

    def _submit_after_metadata(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers,
        deadline_s: float | None,
    ) -> asyncio.Future[RecordMetadata]:
        """submit() for a topic without metadata yet: a task fetches it, then queues the
        record with the caller's future (a plain one, so the caller's deadline can end it)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[RecordMetadata] = loop.create_future()

        async def fetch_then_enqueue() -> None:
            wait_s = self.settings.produce_timeout_s if deadline_s is None else deadline_s
            try:
                partitions = await self._topic_partitions(topic, wait_s)
            except BrokerUnavailable as exc:
                _expire(waiter, exc)
                return
            count = self._partition_counts.setdefault(topic, len(partitions))
            # The caller's own future, and only if its deadline has not answered it already:
            # a record written after its sender was told 503 would be a duplicate when the
            # sender retries.
            if not waiter.done():
                self._enqueue((topic, self._partition(key, count)), (value, key, headers, waiter))

        task = loop.create_task(fetch_then_enqueue())
        self._metadata_fetches.add(task)  # a task nobody holds may be collected mid-way
        task.add_done_callback(self._metadata_fetches.discard)
        if deadline_s is None:
            self._add_deadline(loop, waiter)
        return waiter

    def _enqueue(self, tp: tuple[str, int], entry: _Entry) -> None:
        """Add a record to its partition's next batch and wake the writing rounds."""
        entries = self._pending.get(tp)
        if entries is None:
            self._pending[tp] = [entry]
        else:
            entries.append(entry)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _add_deadline(
        self, loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[RecordMetadata]
    ) -> None:
        """``produce_timeout_s`` from now, ``waiter`` fails with BrokerUnavailable unless
        answered by then (the answered ones at the head are dropped on the way)."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()
        deadlines.append((loop.time() + self.settings.produce_timeout_s, waiter))
        if self._sweeper is None:
            self._sweeper = loop.call_at(deadlines[0][0], self._sweep)

    def _sweep(self) -> None:
        """Expire the writes whose deadline passed (BrokerUnavailable: their callers answer 503)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        late = _late(self.settings.produce_timeout_s)
        while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
            _expire(deadlines.popleft()[1], late)
        if deadlines:
            self._sweeper = loop.call_at(deadlines[0][0], self._sweep)

    async def _topic_partitions(self, topic: str, deadline_s: float) -> Any:
        """The topic's partitions when the producer has no metadata for it yet (first write)."""
        try:
            async with asyncio.timeout(deadline_s):
                return await self._producer.partitions_for(topic)
        except TimeoutError as exc:
            raise BrokerUnavailable(f"no metadata for topic {topic!r} from Kafka") from exc
        except KafkaError as exc:
            raise BrokerUnavailable(f"no metadata for topic {topic!r}: {exc}") from exc

    async def _write_rounds(self) -> None:
        """The one task that writes: a round = one batch per partition with pending records.

        A round's callers are answered once the next round is with the producer: their
        answers (a task step and a response write each, in the gateway) would otherwise run
        first while the broker sat idle. With nothing pending they are answered at once, and
        failures are never held back.
        """
        loop = asyncio.get_running_loop()
        acked: list[_Batch] = []  # the last round: acknowledged, its callers not yet answered
        held: list[_Batch] = []
        pending: dict[tuple[str, int], list[_Entry]] = {}  # the round being submitted
        sent: list[_Batch] = []  # its batches with the producer
        try:
            while self._wake is not None:
                if acked and not self._wake.done():
                    _answer(acked)
                    acked = []
                await self._wake
                self._wake = loop.create_future()
                pending, self._pending = self._pending, {}
                # Should a submission below have to wait (for metadata, or for a batch the
                # producer still holds), the held callers are answered meanwhile.
                held, acked = acked, []
                fallback = loop.call_soon(_answer, held) if held else None
                sent = []
                await self._send_round(pending, sent)
                if fallback is not None:
                    fallback.cancel()
                    _answer(held)
                if not sent:
                    continue
                # Bounded: a producer stopped uncleanly (replaced, see _replace) may never
                # resolve its batches; the callers' own deadlines have answered them by then.
                acks = [ack for ack, _, _, _ in sent]
                await asyncio.wait(acks, timeout=self.settings.produce_timeout_s)
                for batch in sent:
                    if batch[0].done():
                        acked.append(batch)
                    else:  # answered whenever it ends, if a caller is still waiting then
                        batch[0].add_done_callback(functools.partial(_resolve, batch[1], batch[2]))
                        holder = self._unsettled.get(batch[0], (None, None))[0]
                        batch[0].add_done_callback(functools.partial(self._ended_late, holder))
                errors = [ack.exception() for ack, _, _, _ in acked if not ack.cancelled()]
                if any(error is not None for error in errors):
                    too_large = [batch for batch in acked if _refused_as_too_large(batch[0])]
                    _answer([batch for batch in acked if not _refused_as_too_large(batch[0])])
                    acked = []
                    if too_large:
                        try:
                            await self._learn_limits(too_large)
                        except BaseException:  # stopping: nobody else will answer them
                            for _, entries, _, _ in too_large:
                                _fail(entries, BrokerUnavailable("the Kafka producer is stopping"))
                            raise
                    if too_large or any(isinstance(e, BROKEN_PRODUCER_ERRORS) for e in errors):
                        # After a refusal the producer's sequence for that partition is past
                        # the refused batch: its next write there would fail (size_limits).
                        await self._replace(self._producer)
        finally:  # stopping (cancelled): every caller of this task's rounds still gets one answer
            _answer(held)
            _answer(acked)
            # The round with the producer is answered from its acknowledgements, which the
            # producer's flush in stop() brings; what was never handed over (still in
            # ``pending``, see _send_round) is refused.
            for ack, entries, timestamps_ms, _ in sent:
                ack.add_done_callback(functools.partial(_resolve, entries, timestamps_ms))
            for entries in pending.values():
                _fail(entries, BrokerUnavailable("the Kafka producer is stopping"))

    async def _send_round(
        self, pending: dict[tuple[str, int], list[_Entry]], sent: list[_Batch]
    ) -> None:
        """Hand one batch per partition to the producer: each goes to ``sent`` and leaves
        ``pending`` at once, so that a stop half-way knows which records the producer has."""
        for (topic, partition), entries in list(pending.items()):
            try:
                # Read per batch: a batch that broke the producer replaced it (see _submit).
                batch = await self._submit(self._producer, topic, partition, entries)
            except Exception:
                # A bug, not a broker fault (those fail their batch in _submit): answer 503
                # for this partition's records and keep the writer alive.
                log.exception("the batch writer failed a batch for %s-%d", topic, partition)
                _fail(entries, BrokerUnavailable("the batch writer failed"))
                batch = None
            del pending[(topic, partition)]
            if batch is not None:
                sent.append(batch)

    async def _submit(
        self, producer: Any, topic: str, partition: int, entries: list[_Entry]
    ) -> _Batch | None:
        """Append one partition's pending records to a batch and hand it to the producer.

        Records whose caller already gave up (deadline) are left out. What does not fit in
        one batch (``max_batch_size``) goes back, ahead of newer records, for the next round.
        """
        batch = producer.create_batch()
        taken: list[_Entry] = []
        timestamps_ms: list[int] = []
        bounds = self._limits.bounds(topic) if self._limits.learned else None
        used_bytes = BATCH_HEADER_BYTES
        for index, entry in enumerate(entries):
            value, key, headers, waiter = entry
            if waiter.done():
                continue
            if bounds is not None:  # the topic refused a batch as too large (size_limits)
                refused = self._limits.check(topic, bounds[1], key, value, headers)
                if refused is not None:  # queued before that refusal
                    waiter.set_exception(refused)
                    continue
                adds = record_bytes_max(key, value, headers)
                if taken and used_bytes + adds > bounds[0]:
                    self._requeue(topic, partition, entries[index:])
                    break
                used_bytes += adds
            appended = batch.append(key=key, value=value, timestamp=None, headers=headers)
            if appended is None:  # batch full: the rest waits for the next round
                self._requeue(topic, partition, entries[index:])
                break
            taken.append(entry)
            timestamps_ms.append(appended.timestamp)
        if not taken:
            return None
        batch.close()  # nothing else may append to it once it is the producer's
        try:
            ack: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
        except KafkaError as exc:
            _fail(taken, _as_hookstream_error(exc, len(taken)))
            if isinstance(exc, BROKEN_PRODUCER_ERRORS):
                await self._replace(producer)
            return None
        self.batches_sent += 1
        self.records_sent += len(taken)
        if not ack.done():
            self._unsettled[ack] = (producer, taken)
            ack.add_done_callback(self._unsettled_done)
        return ack, taken, timestamps_ms, (topic, partition)

    async def _learn_limits(self, refused: list[_Batch]) -> None:
        """Batches the broker refused as too large: learn each topic's limit (one question to
        the broker per topic); a lone record is then refused for good, the records of a batch
        of several go back, ahead of newer ones, to be written in smaller batches. Called with
        the round's other callers answered: the question holds up only the writes to come."""
        stated: dict[str, int | None] = {}
        for _, entries, _, (topic, partition) in refused:
            if len(entries) == 1:
                value, key, headers, waiter = entries[0]
                size = lone_record_bytes(key, value, headers)
            else:
                size = BATCH_HEADER_BYTES + sum(
                    record_bytes_max(key, value, headers) for value, key, headers, _ in entries
                )
            if topic not in stated:
                stated[topic] = await describe_max_message_bytes(
                    self._producer.client, topic, min(self.settings.produce_timeout_s, 5.0)
                )
            self._limits.learn(topic, size, len(entries), stated[topic])
            if len(entries) == 1:
                if not waiter.done():
                    waiter.set_exception(self._limits.refusal(topic, size))
            else:
                self._requeue(topic, partition, [e for e in entries if not e[3].done()])

    def _ended_late(self, holder: Any, ack: asyncio.Future[Any]) -> None:
        """A batch that ended after its round stopped waiting: refused as too large, or by a
        producer whose idempotence state broke, its producer is replaced as the round would
        have done (the refused batch's sequence numbers were counted: the next write to that
        partition would fail). Its callers got their answers from ``_resolve``."""
        if holder is None or ack.cancelled() or self._rounds is None:
            return
        if isinstance(ack.exception(), (MessageSizeTooLargeError, *BROKEN_PRODUCER_ERRORS)):
            task = asyncio.get_running_loop().create_task(self._replace(holder))
            self._late_replacements.add(task)
            task.add_done_callback(self._late_replacements.discard)

    def _unsettled_done(self, ack: asyncio.Future[Any]) -> None:
        self._unsettled.pop(ack, None)

    def _requeue(self, topic: str, partition: int, entries: list[_Entry]) -> None:
        tp = (topic, partition)
        self._pending[tp] = entries + self._pending.get(tp, [])
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


class _RoundWrite(PendingWrite):
    """A record queued for a round: ``ack`` fails exactly when the write was given up (never
    handed to a producer, failed by it, or held by one that stopped: see ``_unsettled``)."""

    __slots__ = ()

    @property
    def given_up(self) -> bool:
        ack = self.ack
        return ack.done() and (ack.cancelled() or ack.exception() is not None)


def _as_hookstream_error(exc: BaseException, records: int) -> BrokerUnavailable | RecordTooLarge:
    """The error every caller of a failed batch gets.

    "Too large" is the record's fault (413, not retriable) only when it was alone in its
    batch; in a batch with others (a topic whose ``max.message.bytes`` is below our batch
    size), retrying later, in a smaller batch, can succeed: 503.
    """
    if isinstance(exc, MessageSizeTooLargeError):
        if records == 1:
            return RecordTooLarge("the record is over Kafka's message size limit")
        return BrokerUnavailable(f"Kafka refused a batch of {records} records as too large")
    return BrokerUnavailable(f"Kafka refused the write: {type(exc).__name__}")


def _late(deadline_s: float) -> BrokerUnavailable:
    return BrokerUnavailable(f"Kafka did not acknowledge within {deadline_s:g} s")


def _expire(waiter: asyncio.Future[RecordMetadata], error: BrokerUnavailable) -> None:
    """A write's deadline: its caller is answered 503 unless it was answered already."""
    if not waiter.done():
        waiter.set_exception(error)


def _fail(entries: list[_Entry], error: BrokerUnavailable | RecordTooLarge) -> None:
    for _, _, _, waiter in entries:
        if not waiter.done():
            waiter.set_exception(error)


def _answer(batches: list[_Batch]) -> None:
    for ack, entries, timestamps_ms, _ in batches:
        _resolve(entries, timestamps_ms, ack)


def _refused_as_too_large(ack: asyncio.Future[Any]) -> bool:
    return (
        ack.done() and not ack.cancelled() and isinstance(ack.exception(), MessageSizeTooLargeError)
    )


def _resolve(entries: list[_Entry], timestamps_ms: list[int], ack: asyncio.Future[Any]) -> None:
    """Answer every record of one batch from the batch's one acknowledgement (or failure)."""
    if ack.cancelled():
        _fail(entries, BrokerUnavailable("the write was cancelled"))
        return
    error = ack.exception()
    if error is not None:
        _fail(entries, _as_hookstream_error(error, len(entries)))
        return
    batch: RecordMetadata = ack.result()
    topic, partition, _, base, timestamp, timestamp_type, log_start = batch
    tp = TopicPartition(topic, partition)
    # The broker reports the batch's base offset; record i of the batch is at base + i. A
    # timestamp of -1 means CreateTime: the record's own (the producer's clock at append).
    # tuple.__new__: RecordMetadata's own __new__ is a Python call per record (220 ns, 100 ns
    # this way); every field given, in its order.
    new_tuple = tuple.__new__
    for index, (_, _, _, waiter) in enumerate(entries):
        if not waiter.done():
            waiter.set_result(
                new_tuple(
                    RecordMetadata,
                    (
                        topic,
                        partition,
                        tp,
                        base + index,
                        timestamps_ms[index] if timestamp == -1 else timestamp,
                        timestamp_type,
                        log_start,
                    ),
                )
            )
