"""The durable writer every hookstream process uses to put records on Kafka.

aiokafka's producer defaults to ``acks=1`` without idempotence, which can lose or reorder a
record when a leader fails. Here every write is ``acks="all"`` with the idempotent producer,
and :meth:`KafkaWriter.send` returns only once the broker acknowledged it. Failures and
timeouts become :class:`~schemas.errors.BrokerUnavailable`, which callers turn into a 503 (the
gateway) or a retry (the workers).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.structs import RecordMetadata

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable, RecordTooLarge
from streams.kafka.connection import client_kwargs, start_failure
from streams.kafka.partitioner import KeyPartitioner

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
MAX_BATCH_BYTES = 256 * 1024
# aiokafka's default, stated so that BatchingKafkaWriter checks records against the same figure.
MAX_REQUEST_BYTES = 1024 * 1024
# Errors after which aiokafka's idempotent producer stays broken: replace it.
BROKEN_PRODUCER_ERRORS = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
)


class KafkaWriter:
    """An async context manager around one idempotent, acks=all producer."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        client_id: str = "hookstream",
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        """``max_request_bytes``: the largest produce request (and so record) the producer
        sends; the topic's ``max.message.bytes`` still bounds each batch at the broker."""
        self.settings = settings
        self.client_id = client_id
        self.max_request_bytes = max_request_bytes
        self._producer = self._new_producer()
        self._started = False
        self._replacing = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    def _new_producer(self) -> AIOKafkaProducer:
        # Not streams.kafka.produce_encoding (the replay's): a cheaper request here made the
        # gateway's requests smaller and more frequent, and the broker spent 1.6x the CPU per
        # webhook (3 wrk runs, session 12); the worker showed no gain (bench/pipeline).
        return AIOKafkaProducer(
            **client_kwargs(self.settings),
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.settings.linger_ms,
            # aiokafka's 16 KiB default holds ~15 CloudEvents per partition batch; with one
            # batch in flight per partition, that caps a hot partition's throughput.
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=self.max_request_bytes,
            request_timeout_ms=int(self.settings.produce_timeout_s * 1000),
            retry_backoff_ms=100,
            partitioner=KeyPartitioner(),  # aiokafka's partitions, half its hashing cost
        )

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise await start_failure(self.settings, exc) from exc
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()
        if self._retiring:
            await asyncio.gather(*self._retiring)

    async def _replace(self, broken: AIOKafkaProducer) -> None:
        """Swap a producer whose idempotence state is broken for a fresh one.

        aiokafka's idempotent producer does not recover from a sequence error (e.g. after the
        broker restarted while batches were expiring): every later write fails with
        OutOfOrderSequenceNumber. A new producer gets a new producer id and starts its
        sequences over. Writes the broken one still held have failed; their senders got 503.
        """
        async with self._replacing:
            if broken is not self._producer or not self._started:
                return  # another write already replaced it, or we are stopping
            fresh = self._new_producer()
            try:
                await fresh.start()
            except KafkaError as exc:
                await fresh.stop()
                log.warning("cannot start a fresh Kafka producer yet: %s", type(exc).__name__)
                return
            except asyncio.CancelledError:  # the writer stopping: not left running
                await fresh.stop()
                raise
            self._producer = fresh
            log.warning("the Kafka producer lost its idempotence state; replaced it")
            task = asyncio.create_task(_retire(broken, self.settings.produce_timeout_s))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            task.add_done_callback(lambda _: self._retired(broken))

    def _retired(self, producer: AIOKafkaProducer) -> None:
        """A replaced producer has stopped: nothing of it is left to wait on here (its pending
        writes' acks fail or never resolve; :class:`PendingWrite` tells the two apart)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def ping(self) -> None:
        """Ask the cluster for its metadata: raises BrokerUnavailable when no broker answers.

        Callers bound it with a timeout (``/readyz``); aiokafka retries inside.
        """
        if not self._started:
            raise BrokerUnavailable("the Kafka producer is not running")
        try:
            await self._producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise BrokerUnavailable(f"no Kafka broker answers: {type(exc).__name__}") from exc

    async def topics(self) -> set[str]:
        """The topics on the cluster (that this login may see), from one metadata request:
        a caller checks its topic once, instead of aiokafka waiting produce_timeout_s for a
        missing topic's metadata and logging a warning per retry."""
        if not self._started:
            raise BrokerUnavailable("the Kafka producer is not running")
        try:
            cluster = await self._producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise BrokerUnavailable(f"no Kafka broker answers: {type(exc).__name__}") from exc
        return set(cluster.topics())

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        timeout_s: float | None = None,
    ) -> RecordMetadata:
        """Write one record and wait for the broker's acknowledgement.

        Raises BrokerUnavailable when the write is not acknowledged within ``timeout_s``
        (default: ``kafka.produce_timeout_s``). A timed-out write may still land later; the
        event id makes that duplicate harmless downstream.

        The deadline is one timer per write (``call_later``) rather than an ``asyncio.timeout``
        block: the gateway calls this for every webhook, and the timer is a third of the cost.
        """
        if not self._started:
            raise BrokerUnavailable("the Kafka producer is not running")
        deadline_s = self.settings.produce_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[RecordMetadata] = loop.create_future()
        timer = loop.call_later(deadline_s, expire_waiter, waiter)
        producer = self._producer
        try:
            # send() itself waits when the partition's batch is full; aiokafka bounds that
            # wait by request_timeout_ms (= produce_timeout_s) and raises KafkaTimeoutError.
            ack = await producer.send(topic, value=value, key=key, headers=list(headers) or None)
            ack.add_done_callback(functools.partial(_relay, waiter))
            return await waiter
        except TimeoutError as exc:
            raise BrokerUnavailable(f"Kafka did not acknowledge within {deadline_s:g} s") from exc
        except KafkaError as exc:
            raise await self._refused(exc, len(value), producer) from exc
        finally:
            timer.cancel()
            # The deadline can fire while producer.send() still waits (for a missing topic's
            # metadata): nobody awaits the waiter then, and asyncio would log its TimeoutError
            # as "exception never retrieved" once it is collected.
            if waiter.done() and not waiter.cancelled():
                waiter.exception()

    async def _refused(
        self, exc: KafkaError, size_bytes: int, producer: AIOKafkaProducer
    ) -> RecordTooLarge | BrokerUnavailable:
        """The error a write the producer refused raises (send and write alike); a producer
        whose idempotence state broke is replaced first."""
        if isinstance(exc, MessageSizeTooLargeError):
            return RecordTooLarge(
                f"the record is {size_bytes} bytes, over Kafka's request size limit"
            )
        if isinstance(exc, BROKEN_PRODUCER_ERRORS):
            await self._replace(producer)
        return BrokerUnavailable(f"Kafka refused the write: {type(exc).__name__}")

    async def write(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Headers = ()
    ) -> PendingWrite:
        """Hand one record to the producer and return its pending write, without waiting.

        For callers that retry until a write is on Kafka (agents/emit.py): they wait on the
        returned write with :meth:`outcome`, as often as it takes, instead of writing the record
        again after a deadline while the producer still holds (and may deliver) the first copy.
        Raises BrokerUnavailable (or RecordTooLarge) when the producer did not take the record:
        nothing was written then.
        """
        if not self._started:
            raise BrokerUnavailable("the Kafka producer is not running")
        producer = self._producer
        try:
            # Waits while the partition's batch is full or the topic's metadata is missing,
            # bounded by aiokafka's request_timeout_ms (= produce_timeout_s).
            ack = await producer.send(topic, value=value, key=key, headers=list(headers) or None)
        except KafkaError as exc:
            raise await self._refused(exc, len(value), producer) from exc
        # Retrieve a failure even if the caller stops waiting (e.g. it is cancelled), so that
        # asyncio does not log "Future exception was never retrieved" for it.
        ack.add_done_callback(retrieve_failure)
        return PendingWrite(ack, producer)

    async def outcome(
        self, pending: PendingWrite, *, timeout_s: float | None = None
    ) -> RecordMetadata:
        """Wait up to ``timeout_s`` (default ``kafka.produce_timeout_s``) for ``pending``'s ack.

        Raises BrokerUnavailable when the write is not acknowledged in time; then
        ``pending.given_up`` says whether the producer may still deliver it (wait again) or
        has definitively given it up (only then is writing the record again no duplicate).
        """
        ack = pending.ack
        if ack.done() and not ack.cancelled() and ack.exception() is None:
            # Already acknowledged (a write awaited after others, agents.emit.emit_all): no
            # deadline timer and waiter to set up and tear down.
            return ack.result()
        deadline_s = self.settings.produce_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[RecordMetadata] = loop.create_future()
        timer = loop.call_later(deadline_s, expire_waiter, waiter)
        ack.add_done_callback(functools.partial(_relay, waiter))
        try:
            return await waiter
        except TimeoutError as exc:
            raise BrokerUnavailable(f"Kafka did not acknowledge within {deadline_s:g} s") from exc
        except KafkaError as exc:
            # A batch refused as too large leaves the producer's sequence for its partition
            # past it: the next write there would fail (streams.kafka.size_limits).
            if isinstance(exc, (*BROKEN_PRODUCER_ERRORS, MessageSizeTooLargeError)):
                await self._replace(pending.producer)
            raise BrokerUnavailable(f"Kafka refused the write: {type(exc).__name__}") from exc
        finally:
            timer.cancel()


class PendingWrite:
    """One record the producer took: its acknowledgement, awaitable any number of times.

    When aiokafka's idempotent producer gives a write up ("definitively failed"), in 0.14:
    - the broker answered a non-retriable error (e.g. the record is too large, not authorized);
    - the partition had no known leader and the batch was older than request_timeout_ms
      (drained and failed with NotLeaderForPartition/LeaderNotAvailable);
    - the producer's sender stopped on a fatal error (OutOfOrderSequenceNumber,
      ProducerFenced): every batch it held fails with it;
    - the producer was stopped (a retired producer, see ``KafkaWriter._replace``): a batch it
      had not delivered when its sender was cancelled is never resolved.
    Otherwise (connection refused, request timed out, the leader moved, NotEnoughReplicas, ...)
    it retries the same batch with the same sequence numbers, without an expiry, so the broker
    keeps at most one copy: waiting on the same write is what keeps an outage copy-free.

    Of these, the leaderless expiry and the fatal sender stop can fail a batch that had been
    sent before and may have landed (its answer was lost): writing it again then may add one
    copy, which the event id makes harmless downstream. Nothing else writes twice.
    """

    __slots__ = ("ack", "producer")

    def __init__(self, ack: asyncio.Future[RecordMetadata], producer: AIOKafkaProducer) -> None:
        self.ack = ack
        self.producer = producer

    @property
    def given_up(self) -> bool:
        """The producer failed this write, or stopped without delivering it: write it again."""
        if self.ack.done():
            return self.ack.cancelled() or self.ack.exception() is not None
        # aiokafka keeps no public "stopped" flag; a stopped producer's cancelled sender task
        # leaves its undelivered batches unresolved forever (Sender._fail_all ignores a cancel).
        sender = getattr(self.producer, "_sender", None)
        task = getattr(sender, "sender_task", None)
        closed = bool(getattr(self.producer, "_closed", False))
        return closed and (task is None or task.done())


def retrieve_failure(ack: asyncio.Future[RecordMetadata]) -> None:
    """A done callback: a write's failure counts as retrieved even if nobody awaits it any
    more, so asyncio does not log "exception was never retrieved"."""
    if not ack.cancelled():
        ack.exception()


async def _retire(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """Stop a replaced producer in the background; its pending writes fail (their 503s)."""
    try:
        async with asyncio.timeout(timeout_s):
            await producer.stop()
    except (TimeoutError, KafkaError) as exc:
        log.info("retired Kafka producer stopped uncleanly: %s", type(exc).__name__)


def expire_waiter(waiter: asyncio.Future[RecordMetadata]) -> None:
    """A write's deadline: its caller stops waiting (TimeoutError) unless answered already."""
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _relay(waiter: asyncio.Future[RecordMetadata], ack: asyncio.Future[RecordMetadata]) -> None:
    """Copy the producer's outcome to the caller's waiter, unless the deadline came first."""
    if waiter.done():
        if not ack.cancelled():
            ack.exception()  # retrieved, so asyncio does not log "exception never retrieved"
        return
    if ack.cancelled():
        waiter.set_exception(KafkaError("the write was cancelled"))
    elif (error := ack.exception()) is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(ack.result())
