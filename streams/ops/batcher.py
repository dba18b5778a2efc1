"""``hookstream batcher``: the requests of ``ai.mode: batch`` flows answered by provider jobs.

The worker's AI stage writes each request of a batch flow to ``<prefix>.ai-batch`` and acks
its event (:mod:`agents.stages.batch`): no worker holds an offset while a job runs (up to
24 h). This process reads ``<prefix>.ai-batch`` and cuts it into **rounds**: a round is, per
partition, the ``[start, end)`` offsets pending when ``worker.batch.max_requests`` requests
are pending or the oldest has waited ``worker.batch.max_wait_s``. Each round:

1. is recorded on the journal ``<prefix>.ai-batch-jobs`` (its number and ranges; acks=all)
   before anything else: from then on the round is this process's to finish, and the next
   round starts at its end (the journal is the batcher's committed position);
2. runs as a :class:`~streams.ops.replay_batch.BatchReplayer` over its ranges (the batch
   replay's code, its journal being this one): each job's intent and then its id are
   journaled before any wait, jobs are polled, lines become the AI stage's ``AIResult`` at the
   batch price, failed/expired/invalid lines go to the DLQ with their error;
3. writes its results only after every earlier round has written its own, so a key's results
   never overtake an earlier job's (one key lives in one partition, and a round keeps its
   window's order).

Rounds run concurrently (a new job is submitted while older ones are pending). Killed -9 at
any point and started again, the batcher reads the journal: the rounds without a
``finished`` note are resumed (their jobs polled, a job whose id was lost found by listing the
provider's jobs, as the replay does), and new rounds start after the last journaled end: no
request is submitted twice. A stop (SIGTERM) does not wait for pending jobs: it cancels the
rounds, and the next start resumes them.

Why a command of its own rather than a worker agent: a round is owned by whoever journaled
it, and a Faust agent's partitions move at every rebalance, which would hand half of a round
to another process mid-job; one batcher per deployment owns every round.

**One batcher at a time, enforced** (a second one, or a rolling update's overlap, would
submit the same requests twice: paid twice). Every journal write is a Kafka transaction of
one transactional producer whose ``transactional.id`` is fixed per prefix
(:func:`fence_id`). A batcher's start (``init_transactions``) fences the one before it: that
one's next journal write fails (``ProducerFenced``) and it stops with :class:`Fenced`. Its
next write comes before anything it could submit or write that is not journaled: a round note
before a round's requests are planned, a job's intent before its submission, a ``writing``
note before a round's results. Journal readers read committed notes only (a fenced write may
be in the log, aborted). What fencing cannot stop is a submission already under way: a
fenced batcher's journaled intent whose job the new one finds by listing the provider's jobs,
as after a kill; the new batcher lists only once such a submission has ended
(:meth:`Journal.settle`: the submit's request timeouts after its own start). A batcher paused
between its intent and its submission does not create the job later than one file timeout
after the intent (:meth:`agents.ai.batch._Base._in_time`), so the listing either finds the job
or it is never created. Why not a
consumer group with standbys: a group hands the partition over on a timeout, and a paused
process would go on submitting until it noticed; a fenced write fails at the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, ProducerFenced
from prometheus_client import Counter, Gauge

from schemas import topics as catalogue
from schemas.config import HookstreamConfig
from schemas.errors import BrokerUnavailable, Fenced, UnknownTopic
from streams.kafka.admin import create_topics
from streams.kafka.connection import client_kwargs
from streams.kafka.reader import (
    TOPIC_APPEARS_WITHIN_S,
    new_consumer,
    partitions_of,
    read_window,
    window,
)
from streams.ops.replay_batch import BatchBackend, BatchReplayer, Rounds

log = logging.getLogger(__name__)
BATCHER_KEY = b"batcher"  # the journal key of the round and position notes
# A position note at least this often: the journal's retention (the broker's, 7 days unless
# set) never drops the batcher's position, even when no round is cut for longer.
POSITION_EVERY_S = 3600.0
BATCH_PENDING = Gauge(
    "hookstream_ai_batch_pending_requests",
    "Requests on <prefix>.ai-batch not yet in a round (a job).",
)
BATCH_JOBS_IN_FLIGHT = Gauge(
    "hookstream_ai_batch_rounds_in_flight",
    "Rounds (one provider job or more each) submitted and not yet written.",
)
BATCH_RESULTS = Counter(
    "hookstream_ai_batch_results_total", "Results written by the batcher.", ["outcome"]
)


def fence_id(prefix: str) -> str:
    """The transactional id of every batcher of ``prefix``: the newest one fences the others."""
    return f"hookstream-batcher.{prefix}"


class Journal:
    """The batcher's journal writes, each one Kafka transaction under :func:`fence_id`.

    :meth:`start` fences any earlier batcher of the prefix (its open transaction is aborted,
    its next :meth:`write` fails). A write returns once committed (acks=all); one at a time,
    as a transactional producer requires."""

    def __init__(self, config: HookstreamConfig, topic: str, submit_within_s: float) -> None:
        self.config = config
        self.topic = topic
        self.id = fence_id(config.kafka.topic_prefix)
        self.submit_within_s = submit_within_s
        self.producer = AIOKafkaProducer(
            **client_kwargs(config.kafka),
            client_id="hookstream-batcher",
            acks="all",
            enable_idempotence=True,
            transactional_id=self.id,
        )
        self._lock = asyncio.Lock()
        self._fenced_at = 0.0

    async def start(self) -> None:
        await self.producer.start()  # init_transactions: the earlier batcher is fenced now
        self._fenced_at = time.monotonic()
        log.info(
            "batcher: journal %s is this process's (transactional id %s): any earlier "
            "batcher of this prefix is fenced",
            self.topic,
            self.id,
        )

    async def stop(self) -> None:
        with contextlib.suppress(ProducerFenced, InvalidProducerEpoch):
            await self.producer.stop()

    async def write(self, key: bytes, note: dict[str, Any]) -> None:
        async with self._lock:
            try:
                async with self.producer.transaction():
                    await self.producer.send_and_wait(self.topic, orjson.dumps(note), key=key)
            except (ProducerFenced, InvalidProducerEpoch) as exc:
                asyncio.get_running_loop().set_exception_handler(_quiet_fenced)
                raise Fenced(
                    f"another hookstream batcher started on prefix "
                    f"{self.config.kafka.topic_prefix!r} (transactional id {self.id}) and "
                    "took over its rounds; this one stopped without submitting anything more"
                ) from exc

    async def settle(self) -> None:
        """Until a submission a fenced batcher began before this one started has ended."""
        left_s = self._fenced_at + self.submit_within_s - time.monotonic()
        if left_s > 0:
            log.info(
                "batcher: a job of an earlier batcher has no id on the journal: it is looked "
                "for in %.0f s, once a submission under way has ended",
                left_s,
            )
            await asyncio.sleep(left_s)


@dataclass
class Round:
    number: int
    ranges: dict[int, tuple[int, int]]
    done: bool = False


@dataclass
class BatcherStats:
    rounds_resumed: int = 0
    rounds: int = 0
    results: int = 0
    dead_lettered: int = 0
    cost_usd: float = 0.0


class Batcher:
    def __init__(self, config: HookstreamConfig, backend: BatchBackend) -> None:
        self.config = config
        self.backend = backend
        self.settings = config.worker.batch
        self.topics = catalogue.Topics(config.kafka.topic_prefix)
        self.journal = self.topics.ai_batch_jobs
        self.stats = BatcherStats()
        self._previous: asyncio.Task[None] | None = None
        self._journal: Journal | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> BatcherStats:
        """Resume the journal's unfinished rounds, then cut new ones until ``stop`` is set."""
        await create_topics(self.config.kafka, {self.journal: {}}, partitions=1)
        writer = Journal(self.config, self.journal, self.backend.submit_within_s())
        self._journal = writer
        try:
            await writer.start()  # before the journal is read: what follows is final
            rounds, start, following = await self._read_journal()
            for old in rounds:
                if not old.done:
                    self.stats.rounds_resumed += 1
                    self._start(old, fresh=False)
            await self._cut(writer, following, start, stop)
        finally:
            for task in self._running:
                task.cancel()  # pending jobs are not waited for: the journal resumes them
            await asyncio.gather(*self._running, return_exceptions=True)
            await writer.stop()
        return self.stats

    async def _cut(
        self,
        writer: Journal,
        number: int,
        start: dict[int, int],
        stop: asyncio.Event,
    ) -> None:
        consumer = new_consumer(self.config.kafka)
        await consumer.start()
        try:
            tps = await partitions_of(consumer, self.topics.ai_batch)
            low = await consumer.beginning_offsets(tps)
            position = {tp.partition: max(start.get(tp.partition, 0), low[tp]) for tp in tps}
            waiting_since: float | None = None
            check_s = min(1.0, self.settings.max_wait_s / 4)
            noted = time.monotonic()
            while not stop.is_set():
                self._raise_failed()
                if time.monotonic() - noted >= POSITION_EVERY_S:
                    await self._write_note(writer, _position_note(number, position))
                    noted = time.monotonic()
                high = await consumer.end_offsets(tps)
                ends = {tp.partition: high[tp] for tp in tps}
                pending = sum(max(0, ends[p] - position[p]) for p in position)
                BATCH_PENDING.set(pending)
                now = time.monotonic()
                if pending and waiting_since is None:
                    waiting_since = now
                due = waiting_since is not None and now - waiting_since >= self.settings.max_wait_s
                if pending and (pending >= self.settings.max_requests or due):
                    ranges = {p: (position[p], ends[p]) for p in position if ends[p] > position[p]}
                    new = Round(number, ranges)
                    # Journaled (acks=all) before any request is planned: the round is ours.
                    await self._write_note(writer, _round_note(new))
                    noted = time.monotonic()
                    self._start(new, fresh=True)
                    position.update({p: end for p, (_, end) in ranges.items()})
                    number += 1
                    waiting_since = None
                    BATCH_PENDING.set(0)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=check_s)
        finally:
            await consumer.stop()

    def _raise_failed(self) -> None:
        """A round that failed (a provider refusing a job, Kafka gone) stops the batcher: its
        successors must not write before it, and a restart resumes it."""
        for task in list(self._running):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def _start(self, job_round: Round, *, fresh: bool) -> None:
        previous = self._previous
        task = asyncio.create_task(self._round(job_round, previous, fresh=fresh))
        self._previous = task
        self._running.add(task)
        BATCH_JOBS_IN_FLIGHT.set(len(self._running))

        def finished(done: asyncio.Task[None]) -> None:
            if done.cancelled() or done.exception() is None:
                self._running.discard(done)
            BATCH_JOBS_IN_FLIGHT.set(len(self._running))

        task.add_done_callback(finished)

    async def _round(
        self, job_round: Round, previous: asyncio.Task[None] | None, *, fresh: bool
    ) -> None:
        replayer = BatchReplayer(
            self.config,
            self.topics.ai_batch,
            self.backend,
            replay_id=f"batcher-{job_round.number}",
            start=None,
            end=None,
            poll_s=self.settings.poll_s,
            max_job_lines=self.settings.max_requests,
            rounds=Rounds(
                self.journal,
                job_round.ranges,
                _after(previous),
                note=None if self._journal is None else self._journal.write,
                settle=None if self._journal is None else self._journal.settle,
            ),
        )
        stats = await replayer.run(fresh=fresh)
        self.stats.rounds += 1
        self.stats.results += stats.results
        self.stats.dead_lettered += stats.dead_lettered
        self.stats.cost_usd += stats.cost_usd
        BATCH_RESULTS.labels("result").inc(stats.results)
        BATCH_RESULTS.labels("dead_letter").inc(stats.dead_lettered)
        log.info(
            "batcher: round %d done: %d result(s), %d dead-lettered, $%.4f at batch prices",
            job_round.number,
            stats.results,
            stats.dead_lettered,
            stats.cost_usd,
        )

    async def _write_note(self, writer: Journal, note: dict[str, Any]) -> None:
        await writer.write(BATCHER_KEY, {**note, "at": datetime.now(UTC).isoformat()})

    async def _read_journal(self) -> tuple[list[Round], dict[int, int], int]:
        """Every journaled round, in order, each marked done when its replay finished; the
        position (per partition, the first offset of ``<prefix>.ai-batch`` in no round) and
        the next round's number."""
        # Committed notes only: a fenced batcher's last note may be in the log, aborted.
        consumer = new_consumer(self.config.kafka, isolation_level="read_committed")
        rounds: dict[int, Round] = {}
        finished: set[str] = set()
        start: dict[int, int] = {}
        following = 0
        try:
            await consumer.start()
            # Created (by run) just before: the broker may not show it in its metadata yet.
            try:
                tps = await partitions_of(
                    consumer, self.journal, appear_within_s=TOPIC_APPEARS_WITHIN_S
                )
            except UnknownTopic as exc:  # not a missing topic: the broker lags (retry later)
                raise BrokerUnavailable(
                    f"the batcher's journal {self.journal!r}, created at its start, is not in "
                    f"the broker's metadata after {TOPIC_APPEARS_WITHIN_S:g} s"
                ) from exc
            win = await window(consumer, self.journal, partitions=tps)
            async for batch in read_window(consumer, win):
                for record in batch:
                    note: dict[str, Any] = orjson.loads(record.value or b"{}")
                    if record.key == BATCHER_KEY and note.get("kind") == "round":
                        ranges = {int(p): (r[0], r[1]) for p, r in note["ranges"].items()}
                        rounds[note["round"]] = Round(note["round"], ranges)
                        ends = {p: end for p, (_, end) in ranges.items()}
                        following = max(following, note["round"] + 1)
                    elif record.key == BATCHER_KEY and note.get("kind") == "position":
                        ends = {int(p): int(end) for p, end in note["ends"].items()}
                        following = max(following, int(note["next_round"]))
                    elif note.get("kind") == "finished":
                        finished.add(str(note.get("replay")))
                        continue
                    else:
                        continue
                    # A round covers only the partitions that had requests: the others' keep
                    # the end an earlier note gave them.
                    start.update({p: max(end, start.get(p, 0)) for p, end in ends.items()})
        finally:
            await consumer.stop()
        for number, found in rounds.items():
            found.done = f"batcher-{number}" in finished
        return [rounds[n] for n in sorted(rounds)], start, following


def _quiet_fenced(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """aiokafka leaves the fenced transaction's own futures unretrieved: asyncio would log
    each with a traceback, after :class:`Fenced` has said it in one line."""
    if isinstance(context.get("exception"), (ProducerFenced, InvalidProducerEpoch)):
        return
    loop.default_exception_handler(context)


def _after(previous: asyncio.Task[None] | None) -> Callable[[], Awaitable[None]]:
    """Wait until the previous round has written its results (or failed: then this one
    does not write, and the batcher stops)."""

    async def turn() -> None:
        if previous is not None:
            await asyncio.shield(previous)

    return turn


def _round_note(job_round: Round) -> dict[str, Any]:
    return {
        "kind": "round",
        "round": job_round.number,
        "ranges": {str(p): list(r) for p, r in job_round.ranges.items()},
    }


def _position_note(following: int, position: dict[int, int]) -> dict[str, Any]:
    return {
        "kind": "position",
        "next_round": following,
        "ends": {str(p): end for p, end in position.items()},
    }
