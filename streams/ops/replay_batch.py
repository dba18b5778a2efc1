"""``hookstream replay --batch``: a window's AI tasks answered through the providers' batch APIs.

Where a plain replay re-injects records for the worker to call the model one event at a time,
this one reads a window of the **enriched** topic (the AI stage's input: each record holds its
flow and enrichment) and answers it itself, at the batch APIs' price (half the synchronous one
at OpenAI and Anthropic):

1. The journal (``<prefix>.replay-jobs``, written acks=all) is read for this replay's id: the
   jobs an earlier run of the same replay submitted, and which of them it finished.
2. The window is read in order; for each record, the backend (:class:`BatchBackend`, the AI
   stage's own code, wired by the CLI since this layer may not import ``agents``) renders the
   flow's request as the AI stage would and asks the answer cache. A cached answer needs no
   call; a record an earlier run already put in a job is not planned again.
3. The remaining requests are grouped per provider into jobs of at most ``max_job_lines``. For
   each job, its intent (label, provider, the ``custom_id`` of every request it covers) is on
   the journal before it is submitted, and the provider's job id right after, each
   acknowledged by every in-sync replica, before anything waits.
4. Every unfinished job is polled until the provider says it ended; its lines are turned into
   the AI stage's :class:`~schemas.events.AIResult` (validated against the flow's output
   schema, cost at the batch price).
5. The results are written to the results topic in the window's order, so in per-key order
   (a key lives in one partition), each with the ``hookstream-replay: <id>`` header; a line
   that failed, expired, or answered something the schema refuses goes to the DLQ with its
   error (stage ``ai``, attempts 1, the enriched record byte for byte: ``hookstream dlq
   redrive`` sends it through the synchronous path when wanted). Once Kafka has the results,
   each paid answer's answer-cache entry follows (the AI stage's key and record, in its
   order), so a later replay or worker asked the same request pays nothing. Then each job is
   marked done on the journal, and the replay as finished.

A run killed at any point and started again with the same replay id (the same arguments, or
``--batch-id``) resumes: the journal's jobs are polled, not submitted again; an intent without
a job id (killed before the id was journaled) is looked up in the provider's list of jobs
(:meth:`BatchBackend.find`) and adopted, or, not found, its requests are submitted anew. A kill
while results are written writes those already written again on the next run (same results,
same event ids: the sinks' idempotency keys absorb them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from schemas import topics as catalogue
from schemas.config import HookstreamConfig
from schemas.config_flows import FlowConfig
from schemas.errors import BrokerUnavailable, RecordTooLarge, RemoteError, ToolError
from schemas.events import DeadLetter
from schemas.headers import FLOW_HEADER, REPLAY_HEADER, carried_headers, trace_headers
from streams.kafka.admin import create_topics
from streams.kafka.connection import client_kwargs
from streams.kafka.reader import Position, Window, new_consumer, read_window, window
from streams.kafka.size_limits import (
    describe_max_message_bytes,
    fit_batches,
    lone_record_bytes,
)

log = logging.getLogger(__name__)
MAX_JOB_LINES = 10_000  # requests per job (OpenAI takes 50,000, Anthropic 100,000)


@dataclass(frozen=True, slots=True)
class Plan:
    """How one (flow, record) is answered: ``result`` (a cached answer's AIResult JSON),
    ``request`` (a call, on ``provider``), or ``error`` (dead-lettered, no call)."""

    kind: Literal["cached", "call", "invalid"]
    result: bytes | None = None
    provider: str = ""
    request: Any = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Status:
    state: str
    ended: bool


class BatchBackend(Protocol):
    """The AI stage's side of a batch replay (:mod:`streams.cli.replay_batch_backend`)."""

    def plan(self, flow: FlowConfig, value: dict[str, Any]) -> Plan: ...

    async def submit(
        self,
        provider: str,
        lines: Sequence[tuple[str, Any]],
        label: str,
        intent_at: tuple[float, float],
    ) -> str:
        """Submit one job, unless more than one file timeout has passed since ``intent_at``
        (monotonic and wall seconds before its intent's journal write): then ToolError, and
        nothing is created (:meth:`agents.ai.batch._Base._in_time` says why)."""
        ...

    async def find(
        self, provider: str, label: str, lines: int, since_s: float, known: set[str]
    ) -> str | None:
        """A job submitted as ``label`` whose id never reached the journal (the provider's
        list of jobs), or None."""
        ...

    def submit_within_s(self) -> float:
        """The longest one ``submit`` can take, any provider (its requests' timeouts)."""
        ...

    async def status(self, provider: str, job_id: str) -> Status: ...

    def cache_topic(self) -> tuple[str, dict[str, str]] | None:
        """The answer cache's topic and its configs (created when missing), or None when no
        flow caches its answers."""
        ...

    def cache_record(
        self, flow: FlowConfig, value: dict[str, Any], result: bytes
    ) -> tuple[bytes, bytes] | None:
        """The answer-cache record (key, value) the AI stage writes beside ``result`` when it
        pays for an answer, or None (the flow does not cache, or the result came from it)."""
        ...

    async def results(
        self,
        provider: str,
        job_id: str,
        answered: Mapping[str, tuple[FlowConfig, dict[str, Any]]],
        latency_ms: float,
    ) -> dict[str, bytes | BaseException]:
        """Each covered custom_id's AIResult JSON, or the error it is dead-lettered with."""
        ...


@dataclass
class Rounds:
    """A replay run as one round of ``hookstream batcher`` (:mod:`streams.ops.batcher`): its
    window is ``ranges`` (partition: [start, end) offsets of ``<prefix>.ai-batch``), its
    journal the batcher's, and it writes its results only once ``turn`` returns (the earlier
    rounds' are written), without the replay header."""

    journal: str
    ranges: dict[int, tuple[int, int]]
    turn: Callable[[], Awaitable[None]]
    # The batcher's fenced journal write (key, note): it fails with Fenced once a newer
    # batcher has started, so that nothing is submitted or written after that.
    note: Callable[[bytes, dict[str, Any]], Awaitable[None]] | None = None
    # Awaited before a job whose id was never journaled is looked for by listing: a fenced
    # batcher may still be sending it (journaled intent, submission under way).
    settle: Callable[[], Awaitable[None]] | None = None


@dataclass
class _Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    flow: FlowConfig
    parsed: dict[str, Any]

    @property
    def custom_id(self) -> str:
        # Anthropic's custom_id: 1-64 of [a-zA-Z0-9_-]; unique within the window.
        return f"{self.partition}_{self.offset}"


@dataclass
class Job:
    index: int
    provider: str
    job_id: str
    covers: list[str]
    submitted_at: float
    done: bool = False


@dataclass
class _Intent:
    """A job about to be submitted: on the journal before the submission."""

    index: int
    provider: str
    label: str
    covers: list[str]
    at: float


@dataclass
class BatchStats:
    replay_id: str
    window: int = 0
    cached: int = 0
    invalid: int = 0
    submitted: int = 0  # requests submitted by this run
    resumed: int = 0  # requests of jobs an earlier run submitted
    found: int = 0  # jobs whose id an earlier run never learnt, found by listing
    jobs: list[Job] = field(default_factory=list)
    results: int = 0
    cache_entries: int = 0  # answer-cache entries written beside the results
    dead_lettered: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    already_finished: bool = False
    # Records of flows a batch job cannot answer (several AI steps, or none), left alone.
    not_batchable: int = 0
    # A batcher round's second copies of one event (queued twice by a worker killed between
    # two acks): left out, the first copy's result is the event's.
    duplicates: int = 0


class BatchReplayer:
    def __init__(
        self,
        config: HookstreamConfig,
        topic: str,
        backend: BatchBackend,
        *,
        replay_id: str,
        start: Position | None,
        end: Position | None,
        flow: str | None = None,
        poll_s: float = 10.0,
        max_job_lines: int = MAX_JOB_LINES,
        rounds: Rounds | None = None,
    ) -> None:
        prefix = config.kafka.topic_prefix
        self.topics = catalogue.Topics(prefix)
        self.rounds = rounds
        if topic != self.topics.enriched and rounds is None:
            raise ToolError(
                f"--batch replays the enriched topic ({self.topics.enriched}: the AI stage's "
                f"input, with each event's flow and enrichment), not {topic}"
            )
        self.config = config
        self.topic = topic
        self.backend = backend
        self.replay_id = replay_id
        self.start, self.end = start, end
        self.flow = flow
        self.poll_s = poll_s
        self.max_job_lines = max_job_lines
        # A batch job answers one request per event: flows with several AI steps (a step's
        # prompt needs the answer before it) or with none are replayed without --batch.
        self.flows = {f.name: f for f in config.flows if f.ai is not None}
        self.other_flows = {f.name for f in config.flows if f.ai is None}
        if flow is not None and flow in self.other_flows:
            raise ToolError(
                f"--batch replays flows with one AI step (ai:); flow {flow} has "
                f"{'several steps' if self._has_steps(config, flow) else 'no AI step'}: "
                "replay it without --batch"
            )
        self.journal = self.topics.replay_jobs if rounds is None else rounds.journal

    @staticmethod
    def _has_steps(config: HookstreamConfig, name: str) -> bool:
        return any(f.name == name and f.steps for f in config.flows)

    async def run(self, say: Any = None, *, fresh: bool = False) -> BatchStats:
        """Run or resume the replay; ``fresh``: its id is new to the journal (not read)."""
        stats = BatchStats(self.replay_id)
        started = time.monotonic()
        # Just created, it holds nothing: not read (its metadata may not have reached every
        # broker yet, and a read would find no partition).
        new_journal = bool(await create_topics(self.config.kafka, {self.journal: {}}, partitions=1))
        cache = self.backend.cache_topic()
        if cache is not None:  # the worker's own map topic: its configs, like the worker's
            await create_topics(self.config.kafka, {cache[0]: cache[1]})
        producer = AIOKafkaProducer(
            **client_kwargs(self.config.kafka),
            client_id=f"hookstream-replay-batch-{self.replay_id}",
            acks="all",
            enable_idempotence=True,
            max_request_size=8 * 1024 * 1024,
        )
        try:
            await producer.start()
            jobs: list[Job] = []
            intents: list[_Intent] = []
            finished = False
            if not new_journal and not fresh:
                jobs, intents, finished = await self._read_journal()
            if finished:
                stats.already_finished = True
                return stats
            for job in await self._found(producer, jobs, intents):
                jobs.append(job)
                stats.found += 1
            jobs.sort(key=lambda job: job.index)
            records, plans = await self._read_window(stats, jobs)
            covered = {cid for job in jobs for cid in job.covers}
            stats.resumed = len(covered)
            stats.jobs = jobs
            first_index = max([j.index for j in jobs] + [i.index for i in intents], default=-1) + 1
            for job in await self._submit(producer, records, plans, covered, first_index, stats):
                jobs.append(job)
            outcomes = _settled(plans)
            for job in jobs:
                if job.done:
                    for cid in job.covers:
                        records.pop(cid, None)  # written by the run that finished it
                    continue
                if say is not None:
                    say(f"waiting for job {job.job_id} ({job.provider}, {len(job.covers):,})")
                outcomes.update(await self._wait(job, records))
            if self.rounds is not None:
                await self.rounds.turn()  # the earlier rounds' results first: per-key order
                # Through the batcher's fence: a batcher replaced while it polled stops here,
                # and the results are written once, by its successor.
                await self._note(producer, {"kind": "writing"})
            await self._write(producer, records, outcomes, stats)
            for job in jobs:
                if not job.done:
                    await self._note(producer, {"kind": "done", "job": job.index})
            await self._note(producer, {"kind": "finished"})
        except KafkaError as exc:
            raise BrokerUnavailable(f"batch replay of {self.topic} failed: {exc}") from exc
        except RemoteError as exc:  # a provider refused or did not answer a job request
            raise ToolError(
                f"batch replay {self.replay_id}: {exc}; the jobs submitted so far are on "
                f"{self.journal}: the same command resumes them"
            ) from exc
        finally:
            await producer.stop()
        stats.elapsed_s = time.monotonic() - started
        return stats

    async def _note(self, producer: AIOKafkaProducer, note: dict[str, Any]) -> None:
        """One journal record, acknowledged by every in-sync replica before returning."""
        note = {"replay": self.replay_id, **note, "at": datetime.now(UTC).isoformat()}
        if self.rounds is not None and self.rounds.note is not None:
            await self.rounds.note(self.replay_id.encode(), note)
            return
        await producer.send_and_wait(self.journal, orjson.dumps(note), key=self.replay_id.encode())

    async def _found(
        self, producer: AIOKafkaProducer, jobs: list[Job], intents: list[_Intent]
    ) -> list[Job]:
        """The jobs of intents without a job record: submitted, but the run died before it
        journaled the id (or the provider's answer was lost). Asked for by listing the
        provider's jobs; those found are journaled now, the others were never created and
        their requests are planned again."""
        known = {job.job_id for job in jobs}
        found: list[Job] = []
        if intents and self.rounds is not None and self.rounds.settle is not None:
            await self.rounds.settle()
        for intent in intents:
            job_id = await self.backend.find(
                intent.provider, intent.label, len(intent.covers), intent.at, known
            )
            if job_id is None:
                log.info("replay %s: job %s was never created", self.replay_id, intent.label)
                continue
            known.add(job_id)
            job = Job(intent.index, intent.provider, job_id, intent.covers, intent.at)
            await self._note(producer, _job_note(job))
            found.append(job)
        return found

    async def _read_journal(self) -> tuple[list[Job], list[_Intent], bool]:
        # Committed notes only: a replaced batcher's last note may be in the log, aborted.
        consumer = new_consumer(self.config.kafka, isolation_level="read_committed")
        jobs: dict[int, Job] = {}
        intents: dict[int, _Intent] = {}
        finished = False
        try:
            await consumer.start()
            win = await window(consumer, self.journal)
            async for batch in read_window(consumer, win):
                for record in batch:
                    if record.key != self.replay_id.encode() or record.value is None:
                        continue
                    note = orjson.loads(record.value)
                    if note.get("kind") == "job":
                        jobs[note["job"]] = Job(
                            note["job"],
                            note["provider"],
                            note["job_id"],
                            list(note["covers"]),
                            float(note["submitted_at"]),
                        )
                    elif note.get("kind") == "submitting":
                        intents[note["job"]] = _Intent(
                            note["job"],
                            note["provider"],
                            note["label"],
                            list(note["covers"]),
                            float(note["submitted_at"]),
                        )
                    elif note.get("kind") == "done" and note.get("job") in jobs:
                        jobs[note["job"]].done = True
                    elif note.get("kind") == "finished":
                        finished = True
        finally:
            await consumer.stop()
        pending = [intent for index, intent in sorted(intents.items()) if index not in jobs]
        return [jobs[i] for i in sorted(jobs)], pending, finished

    async def _read_window(
        self, stats: BatchStats, jobs: list[Job]
    ) -> tuple[dict[str, _Record], dict[str, Plan]]:
        """The window's records (in order: per partition, by offset) and a plan for each
        record no journaled job covers."""
        covered = {cid for job in jobs for cid in job.covers}
        records: dict[str, _Record] = {}
        plans: dict[str, Plan] = {}
        consumer = new_consumer(self.config.kafka)
        try:
            await consumer.start()
            if self.rounds is not None:
                win = Window(
                    {
                        TopicPartition(self.topic, p): bounds
                        for p, bounds in self.rounds.ranges.items()
                    }
                )
            else:
                win = await window(consumer, self.topic, self.start, self.end)
            stats.window = win.size
            seen: set[tuple[Any, ...]] = set()
            async for batch in read_window(consumer, win):
                for item in batch:
                    record = self._record(item)
                    if record is None:
                        stats.not_batchable += self._other_flow(item)
                        continue
                    if self.rounds is not None:
                        # The first copy in the window's order: the same one on a resume.
                        identity = _identity(record)
                        if identity in seen:
                            stats.duplicates += 1
                            continue
                        seen.add(identity)
                    records[record.custom_id] = record
                    if record.custom_id in covered:
                        continue
                    plan = self.backend.plan(record.flow, record.parsed)
                    plans[record.custom_id] = plan
                    stats.cached += plan.kind == "cached"
                    stats.invalid += plan.kind == "invalid"
        finally:
            await consumer.stop()
        return records, plans

    def _other_flow(self, item: Any) -> bool:
        """Is this record one of a flow --batch leaves alone (and the replay selects)?"""
        if not self.other_flows or self.flow is not None:
            return False
        try:
            parsed = orjson.loads(item.value or b"")
        except orjson.JSONDecodeError:
            return False
        return isinstance(parsed, dict) and parsed.get("flow") in self.other_flows

    def _record(self, item: Any) -> _Record | None:
        try:
            parsed = orjson.loads(item.value or b"")
        except orjson.JSONDecodeError:
            return None
        flow = self.flows.get(str(parsed.get("flow"))) if isinstance(parsed, dict) else None
        if flow is None or (self.flow is not None and flow.name != self.flow):
            return None
        headers = [(k, bytes(v)) for k, v in item.headers or () if v is not None]
        return _Record(item.partition, item.offset, item.key, item.value, headers, flow, parsed)

    async def _submit(
        self,
        producer: AIOKafkaProducer,
        records: dict[str, _Record],
        plans: dict[str, Plan],
        covered: set[str],
        first_index: int,
        stats: BatchStats,
    ) -> list[Job]:
        by_provider: dict[str, list[tuple[str, Any]]] = {}
        for cid, plan in plans.items():
            if plan.kind == "call" and cid not in covered:
                by_provider.setdefault(plan.provider, []).append((cid, plan.request))
        jobs: list[Job] = []
        index = first_index
        for provider, lines in by_provider.items():
            for at in range(0, len(lines), self.max_job_lines):
                chunk = lines[at : at + self.max_job_lines]
                label = f"{self.replay_id}-{index}"
                covers = [cid for cid, _ in chunk]
                submitted_at = time.time()
                intent_at = (time.monotonic(), submitted_at)
                # The intent first: a run killed before the job's id is journaled finds the
                # job again by listing the provider's jobs (label, size, time).
                intent = {"job": index, "provider": provider, "label": label}
                await self._note(
                    producer,
                    {
                        "kind": "submitting",
                        **intent,
                        "covers": covers,
                        "submitted_at": submitted_at,
                    },
                )
                job_id = await self.backend.submit(provider, chunk, label, intent_at)
                job = Job(index, provider, job_id, covers, submitted_at)
                # On Kafka (acks=all) before any wait: a run killed from here on resumes it.
                await self._note(producer, _job_note(job))
                log.info(
                    "replay %s: job %s submitted (%d requests)", self.replay_id, job_id, len(chunk)
                )
                stats.submitted += len(chunk)
                jobs.append(job)
                index += 1
        return jobs

    async def _wait(
        self, job: Job, records: dict[str, _Record]
    ) -> dict[str, bytes | BaseException]:
        while True:
            try:
                status = await self.backend.status(job.provider, job.job_id)
            except RemoteError as exc:
                if not exc.retriable:
                    raise
                # A job may take a day: one 5xx or timeout on the way is waited out.
                log.warning("replay %s: polling job %s: %s", self.replay_id, job.job_id, exc)
                await asyncio.sleep(max(self.poll_s, 1.0))
                continue
            if status.ended:
                break
            await asyncio.sleep(self.poll_s)
        latency_ms = (time.time() - job.submitted_at) * 1000
        answered = {
            cid: (records[cid].flow, records[cid].parsed) for cid in job.covers if cid in records
        }
        found = await self.backend.results(job.provider, job.job_id, answered, latency_ms)
        for cid in answered:
            if cid not in found:
                found[cid] = ToolError(
                    f"batch job {job.job_id} ended {status.state} without an answer for this event"
                )
        return found

    async def _write(
        self,
        producer: AIOKafkaProducer,
        records: dict[str, _Record],
        outcomes: Mapping[str, bytes | BaseException],
        stats: BatchStats,
    ) -> None:
        """Results and dead letters in the window's order (per partition, by offset), then,
        once Kafka has the results, their answer-cache entries (the AI stage's order: a later
        replay or worker asked the same request is answered from the cache, unpaid)."""
        # A batcher's round is no replay: its results carry the queued record's own marker.
        marker = [] if self.rounds is not None else [(REPLAY_HEADER, self.replay_id.encode())]
        sends = []
        cached: list[tuple[bytes, bytes]] = []
        now = datetime.now(UTC)
        # A result over what the results topic takes is dead-lettered, not sent: the broker
        # would refuse it, and the round (with every later one) would fail for good.
        limit = await describe_max_message_bytes(producer.client, self.topics.results, 5.0)
        fit_batches(producer, limit)
        for cid, record in records.items():
            outcome = outcomes.get(cid)
            if outcome is None:
                continue
            carried = [*marker, *_carried(record, marker)]
            if isinstance(outcome, bytes) and limit is not None:
                size = lone_record_bytes(_partition_key(record), outcome, carried)
                if size > limit:  # paid: its cost counted, its answer kept in the cache
                    stats.cost_usd += float(orjson.loads(outcome).get("cost_usd") or 0.0)
                    entry = self.backend.cache_record(record.flow, record.parsed, outcome)
                    if entry is not None:
                        cached.append(entry)
                    outcome = RecordTooLarge(
                        f"the result is {size} bytes, more than topic {self.topics.results} "
                        f"accepts (its max.message.bytes is {limit})"
                    )
            if isinstance(outcome, bytes):
                key = _partition_key(record)
                sends.append(
                    await producer.send(self.topics.results, outcome, key=key, headers=carried)
                )
                stats.results += 1
                stats.cost_usd += float(orjson.loads(outcome).get("cost_usd") or 0.0)
                entry = self.backend.cache_record(record.flow, record.parsed, outcome)
                if entry is not None:
                    cached.append(entry)
                continue
            letter = DeadLetter.of(
                outcome,
                stage="ai",
                original_topic=self.topic,
                original_partition=record.partition,
                original_offset=record.offset,
                first_failure_at=now,
                last_failure_at=now,
            )
            headers = [
                *letter.to_headers(),
                (FLOW_HEADER, record.flow.name.encode()),
                *marker,
                *(_carried(record, marker) if not marker else []),
            ]
            sends.append(
                await producer.send(self.topics.dlq, record.value, key=record.key, headers=headers)
            )
            stats.dead_lettered += 1
        await asyncio.gather(*sends)
        cache = self.backend.cache_topic()
        if cache is not None and cached:
            entries = [await producer.send(cache[0], v, key=k) for k, v in cached]
            await asyncio.gather(*entries)
            stats.cache_entries += len(entries)


def _job_note(job: Job) -> dict[str, Any]:
    return {
        "kind": "job",
        "job": job.index,
        "provider": job.provider,
        "job_id": job.job_id,
        "covers": job.covers,
        "submitted_at": job.submitted_at,
    }


def _settled(plans: Mapping[str, Plan]) -> dict[str, bytes | BaseException]:
    """The outcomes known without a call: cached answers, and errors (no call made)."""
    settled: dict[str, bytes | BaseException] = {}
    for cid, plan in plans.items():
        if plan.result is not None:
            settled[cid] = plan.result
        elif plan.error is not None:
            settled[cid] = plan.error
    return settled


class _Headers:
    """A record's headers where :func:`schemas.headers.trace_headers` looks for them."""

    def __init__(self, headers: list[tuple[str, bytes]]) -> None:
        self.headers = headers


def _carried(record: _Record, marker: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The headers a result takes from its record: a replay's own marker replaces any it
    carried (so only the trace context); a batcher round's carries the record's marker."""
    headers = _Headers(record.headers)
    return trace_headers(headers) if marker else carried_headers(headers)


def _identity(record: _Record) -> tuple[Any, ...]:
    """What makes a queued request one event's: the AI stage's done marker's parts (flow,
    source, id, the replay it belongs to)."""
    event = record.parsed.get("event")
    source, event_id = (
        (event.get("source"), event.get("id")) if isinstance(event, dict) else ("", "")
    )
    replay = next((v for k, v in record.headers if k == REPLAY_HEADER), None)
    return (record.flow.name, source, event_id, replay)


def _partition_key(record: _Record) -> bytes | None:
    """The key the AI stage writes a result under: the event's partition key."""
    event = record.parsed.get("event")
    key = event.get("partitionkey") if isinstance(event, dict) else None
    return key.encode() if isinstance(key, str) else record.key
