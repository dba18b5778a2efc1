"""``hookstream trace``: the journey of one event through the pipeline, read from Kafka alone.

Every record hookstream writes about an event names it: the CloudEvent on the events topic
(``id``, ``source``), the enriched records and AI results (``event``), the sinks' receipts
(``event_key`` = ``<source>/<id>``) and the dead letters (the original value, byte for byte).
Reading those topics back gives the event's whole story — without asking any worker, so it
works with any number of them, and after they are gone.

What it reads, and why that is cheap:

- every topic is read from ``since_ms`` on (Kafka's ListOffsets by timestamp), up to its end
  as of the start (the default window is the last 7 days);
- a record is parsed only when its bytes contain the id (as JSON writes it);
- every stage writes an event's records with the event's partition key, and hookstream's
  producer picks the partition as Java's default partitioner does (murmur2 of the key), so
  once the key is known — given with ``key``, or found on the events topic first — only one
  partition of each other topic is read. Without a key and without the event on the events
  topic (expired, or older than ``since_ms``), every partition is read.

The hops, each a record: ``event`` (events topic), ``enriched`` (one per matching flow),
``result`` (one per flow: model, tokens, cost, the model call's latency), ``receipt`` (one per
sink that delivered: what ``<prefix>.receipts`` holds), ``dead_letter`` (the DLQ, with stage,
error and attempts from its headers), ``redriven`` (a record ``hookstream dlq redrive`` wrote
back, header ``hookstream-redriven``) and ``replayed`` (a copy ``hookstream replay`` wrote;
what the stages made of it keeps its kind, marked with the replay id). Not read: the
delivered-memory (``<prefix>.delivered``: the same receipt, keyed by idempotency key, on
another partition), the redrive memo (``<prefix>.dlq-redriven``: the redriven record itself
says the same) and the worker's compacted dedupe and AI-cache markers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Protocol, cast

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from schemas import topics as catalogue
from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable, ToolError
from schemas.events import DeadLetter, binary_mode_document
from schemas.headers import REDRIVEN_HEADER, REPLAY_HEADER
from schemas.topics import Topics
from streams.kafka.reader import (
    RawRecord,
    Window,
    new_consumer,
    partitions_of,
    read_window_raw,
    window,
)

DEFAULT_SINCE_S = 7 * 24 * 3600
# The topics read, in pipeline order (the order of hops written in the same millisecond).
_KINDS = {
    catalogue.EVENTS: "event",
    catalogue.ENRICHED: "enriched",
    catalogue.RESULTS: "result",
    catalogue.DLQ: "dead_letter",
    catalogue.RECEIPTS: "receipt",
}
_RANK = {role: rank for rank, role in enumerate(_KINDS)}


@dataclass
class Hop:
    """One record of the event's journey."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    kind: str  # event, enriched, result, receipt, dead_letter, redriven, replayed
    headers: dict[str, str]
    value: dict[str, Any] | None
    summary: str
    role: str = ""  # the topic's role (events, enriched, …): the pipeline order of a hop
    replay: str | None = None  # the replay id, on a replayed record and on what came of it

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "time": iso_ms(self.timestamp_ms),
            "summary": self.summary,
            "replay": self.replay,
            "headers": self.headers,
            "value": self.value,
        }


@dataclass(frozen=True, slots=True)
class Searched:
    """One topic as the search read it: which partitions, from which offsets, how many
    records."""

    topic: str
    partitions: list[int]
    records: int

    def text(self) -> str:
        parts = ",".join(str(p) for p in self.partitions) if self.partitions else "none"
        return f"{self.topic}[{parts}] {_count(self.records, 'record')}"


@dataclass
class Journey:
    """Every hop found for one event, in time order, and what was searched to find them."""

    event_id: str
    source: str | None
    hops: list[Hop]
    key: str | None = None
    since_ms: int = 0
    searched: list[Searched] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def trace_id(self) -> str | None:
        """The event's trace id (its ``traceid``, carried to every record made from it): the
        id its log lines and spans carry."""
        for hop in self.hops:
            value = hop.value or {}
            event = value.get("event", value)
            if isinstance(event, dict) and isinstance(event.get("traceid"), str):
                return str(event["traceid"])
        return None

    @property
    def found(self) -> bool:
        return bool(self.hops)

    def latencies_ms(self) -> list[int | None]:
        """Per hop, milliseconds since the previous hop (None for the first)."""
        stamps = [hop.timestamp_ms for hop in self.hops]
        return [None, *(b - a for a, b in pairwise(stamps))]

    def total_ms(self) -> int | None:
        """From the first hop to the last (None without hops)."""
        return self.hops[-1].timestamp_ms - self.hops[0].timestamp_ms if self.hops else None

    def searched_text(self) -> str:
        """What was read: the window's start and each topic's partitions and records."""
        read = sum(s.records for s in self.searched)
        topics = "; ".join(s.text() for s in self.searched)
        return f"searched since {iso_ms(self.since_ms)} ({_count(read, 'record')} read): {topics}"

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "source": self.source,
            "key": self.key,
            "trace_id": self.trace_id,
            "found": self.found,
            "since": iso_ms(self.since_ms),
            "total_ms": self.total_ms(),
            "hops": [
                {**hop.as_json(), "latency_ms": latency}
                for hop, latency in zip(self.hops, self.latencies_ms(), strict=True)
            ],
            "searched": [
                {"topic": s.topic, "partitions": s.partitions, "records": s.records}
                for s in self.searched
            ],
        }


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def iso_ms(timestamp_ms: int) -> str:
    """A Kafka timestamp as ISO 8601 UTC with milliseconds (``2026-12-07T00:48:12.345Z``)."""
    when = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition hookstream's producer (aiokafka's default partitioner: murmur2, as Java's
    default) writes ``key`` to, on a topic of ``partitions`` partitions."""
    raw = key.encode() if isinstance(key, str) else key
    every = list(range(partitions))
    return int(DefaultPartitioner()(raw, every, every))


# --- what a record says ------------------------------------------------------------------


class _Record(RawRecord, Protocol):
    """A record as the window reader hands it out, with its timestamp."""

    @property
    def timestamp(self) -> int: ...


def _document(record: _Record) -> dict[str, Any] | None:
    """The record's JSON object (a binary-mode CloudEvent read as its structured document)."""
    headers = [(k, bytes(v)) for k, v in record.headers]
    try:
        binary = binary_mode_document(record.value, headers)
        if binary is not None:
            return binary
        value = orjson.loads(record.value or b"null")
    except (ValueError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def identity(document: dict[str, Any]) -> tuple[str, str] | None:
    """(source, id) of the event a record is about: a CloudEvent, a record holding one
    (``event``: enriched, result) or a receipt (``event_key``)."""
    event = document.get("event")
    if isinstance(event, dict):
        document = event
    source, event_id = document.get("source"), document.get("id")
    if isinstance(source, str) and isinstance(event_id, str):
        return source, event_id
    key = document.get("event_key")
    if isinstance(key, str) and "/" in key:
        source, _, event_id = key.partition("/")
        return source, event_id
    return None


def _s(ms: float) -> str:
    return f"{ms:,.0f} ms" if ms < 1000 else f"{ms / 1000:,.1f} s"


def summarise(role: str, document: dict[str, Any] | None, headers: dict[str, str]) -> str:
    """The one-line summary of a record of ``role`` (events, enriched, results, dlq,
    receipts)."""
    doc = document or {}
    if role == catalogue.DLQ:
        return _dead_letter_summary(headers)
    if role == catalogue.EVENTS:
        event = doc
        return f"{event.get('source')}  {event.get('type')}  key {event.get('partitionkey')}"
    flow = doc.get("flow", "?")
    if role == catalogue.ENRICHED:
        lookups = ", ".join(sorted(doc.get("enrichment") or {})) or "none"
        return f"{flow}  lookups: {lookups}"
    if role == catalogue.RESULTS:
        if not doc.get("model") and doc.get("attempts") == 0:
            return f"{flow}  no AI step: output only, no model call"
        usage = doc.get("usage") or {}
        flags = [name for name in ("cached", "fallback", "reasked") if doc.get(name) is True]
        steps = doc.get("steps") or {}
        if steps:  # a multi-step flow: one call per step is the norm
            flags.append(f"steps {'+'.join(steps)}")
        if int(doc.get("attempts") or 1) > max(1, len(steps)):
            flags.append(f"{doc['attempts']} attempts")
        return (
            f"{flow}  {doc.get('model')}  {usage.get('prompt_tokens', 0)}+"
            f"{usage.get('completion_tokens', 0)} tok  ${float(doc.get('cost_usd') or 0):.4f}  "
            f"{_s(float(doc.get('latency_ms') or 0))}" + "".join(f"  {f}" for f in flags)
        )
    if role == catalogue.RECEIPTS:
        if doc.get("outcome") == "skipped_when":
            return f"{flow}  {doc.get('sink')}  skipped (when)"
        attempts = int(doc.get("attempts") or 1)
        tries = f"  {attempts} attempts" if attempts > 1 else ""
        return f"{flow}  {doc.get('sink')}  status {doc.get('status')}{tries}"
    return ""


def _dead_letter_summary(headers: dict[str, str]) -> str:
    try:
        letter = DeadLetter.from_headers([(k, v.encode()) for k, v in headers.items()], None)
    except ValueError:
        return "dead letter without hookstream's error headers"
    where = " ".join(
        f"{name} {headers[f'hookstream-{name}']}"
        for name in ("flow", "sink")
        if f"hookstream-{name}" in headers
    )
    message = letter.error_message.replace("\n", " ")
    message = message if len(message) <= 100 else message[:99] + "…"
    attempts = f"{letter.attempts} attempt{'s' if letter.attempts != 1 else ''}"
    return f"{letter.stage}  {where}  {letter.error_class}: {message}  ({attempts})"


def _hop(record: ConsumerRecord[bytes, bytes], role: str, document: dict[str, Any] | None) -> Hop:
    headers = {k: bytes(v).decode(errors="replace") for k, v in record.headers}
    summary = summarise(role, document, headers)
    kind = _KINDS[role]
    replay = headers.get(REPLAY_HEADER)
    if role == catalogue.RECEIPTS and replay is None:
        # A receipt has no headers; a replay's delivery has its own idempotency key.
        _, marked, replay_tail = str((document or {}).get("idempotency_key", "")).partition(
            "/replay/"
        )
        replay = replay_tail if marked else None
    redriven = headers.get(REDRIVEN_HEADER)
    if redriven is not None and role != catalogue.DLQ:
        kind, summary = "redriven", f"from dlq {redriven}: {kind}  {summary}"
    return Hop(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        kind=kind,
        headers=headers,
        value=document,
        summary=summary,
        role=role,
        replay=replay,
    )


def _mark_replays(hops: list[Hop]) -> None:
    """A replay's copies are its records on the earliest topic that has any (the replayed
    topic); the stages' outputs downstream keep their kind, marked with the replay id."""
    first: dict[str, int] = {}
    for hop in hops:
        if hop.replay is not None and hop.role != catalogue.DLQ:
            first[hop.replay] = min(first.get(hop.replay, len(_RANK)), _RANK[hop.role])
    for hop in hops:
        if hop.replay is None:
            continue
        if hop.kind != "redriven" and _RANK[hop.role] == first.get(hop.replay):
            hop.kind, hop.summary = "replayed", f"replay {hop.replay}: {hop.summary}"
        else:
            hop.summary += f"  (replay {hop.replay})"


# --- the search ------------------------------------------------------------------------------


@dataclass
class _Search:
    consumer: AIOKafkaConsumer
    topics: Topics
    event_id: str
    source: str | None
    since: datetime
    needle: bytes
    searched: list[Searched] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)
    keys: set[bytes] = field(default_factory=set)
    windows: dict[str, Window] = field(default_factory=dict)

    def matches(self, record: _Record) -> dict[str, Any] | None:
        """The record's document when it is about the event, else None (most records are
        dropped on a byte search, unparsed)."""
        if self.needle not in (record.value or b""):
            # A binary-mode event (CloudEvents' Kafka binding) has its id in a header.
            headers = record.headers
            if not headers or not any(k == "ce_id" and self.needle in v for k, v in headers):
                return None
        document = _document(record)
        found = identity(document) if document is not None else None
        if found is None or found[1] != self.event_id:
            return None
        if self.source is not None and found[0] != self.source:
            return None
        self.sources.add(found[0])
        return document

    def partitions(self, role: str) -> list[TopicPartition] | None:
        """The topic's partitions from the metadata just fetched; None when it does not exist
        (only the events topic must, and :func:`partitions_of` said so for it)."""
        name = self.topics.name(role)
        partitions = self.consumer.partitions_for_topic(name)
        return [TopicPartition(name, p) for p in sorted(partitions)] if partitions else None

    async def fix_windows(self) -> dict[str, list[TopicPartition]]:
        """Each topic's partitions and its window (``since`` to the end now), all before the
        first read: once assigned a topic, a consumer's metadata covers only that topic (the
        others looked absent), and each offset lookup after that waited ~100 ms for metadata.
        One metadata request serves every topic (a forced refresh per topic took ~170 ms)."""
        present = {catalogue.EVENTS: await partitions_of(self.consumer, self.topics.events)}
        for role in _KINDS:
            tps = self.partitions(role) if role != catalogue.EVENTS else None
            if tps:
                present[role] = tps
        windows = await asyncio.gather(
            *(
                window(self.consumer, self.topics.name(role), self.since, partitions=tps)
                for role, tps in present.items()
            )
        )
        self.windows = dict(zip(present, windows, strict=True))
        return present

    async def read(self, selected: dict[str, list[TopicPartition]]) -> None:
        """Read the selected partitions of each role's topic from ``since`` to their end as
        of the start; keep a hop per record about the event.

        Records are read as decoded from the fetched batches, not as ``ConsumerRecord``s:
        building one per record was ~40 % of a 200,000-record search (cProfile), for records
        that are nearly all dropped on the byte search.
        """
        for role, tps in selected.items():
            name = self.topics.name(role)
            ranges = {tp: self.windows[role].ranges[tp] for tp in tps}
            count = 0
            async for partition, records in read_window_raw(self.consumer, Window(ranges)):
                for record in cast("Iterable[_Record]", records):
                    count += 1
                    document = self.matches(record)
                    if document is None:
                        continue
                    self.hops.append(
                        _hop(_consumer_record(name, partition, record), role, document)
                    )
                    if role == catalogue.EVENTS:
                        self._learn_keys(record, document)
            parts = sorted(tp.partition for tp in tps)
            self.searched.append(Searched(name, parts, count))

    def _learn_keys(self, record: _Record, doc: dict[str, Any] | None) -> None:
        if record.key is not None:
            self.keys.add(record.key)
        key = (doc or {}).get("partitionkey")
        self.keys.add(key.encode() if isinstance(key, str) and key else self.event_id.encode())


def _consumer_record(topic: str, partition: int, record: _Record) -> ConsumerRecord[bytes, bytes]:
    key, value = record.key, record.value
    return ConsumerRecord(
        topic,
        partition,
        record.offset,
        record.timestamp,
        0,
        key,
        value,
        None,
        len(key or b""),
        len(value or b""),
        [(k, bytes(v)) for k, v in record.headers],
    )


def _select(tps: list[TopicPartition], keys: Iterable[bytes]) -> list[TopicPartition]:
    """The partitions of ``tps`` the keys land on (every partition when there is no key)."""
    wanted = {partition_for(key, len(tps)) for key in keys}
    return [tp for tp in tps if tp.partition in wanted] if wanted else list(tps)


async def find_journey(
    settings: KafkaSettings,
    *,
    event_id: str | None = None,
    source: str | None = None,
    webhook_id: str | None = None,
    key: str | None = None,
    since_ms: int | None = None,
) -> Journey:
    """Every record about one event since ``since_ms`` (default: the last 7 days).

    The event is ``event_id`` (the CloudEvent id: the webhook id the sender gave, or the hash
    the gateway made), or ``webhook_id`` of ``source``; ``source`` narrows an id that several
    sources use (refused as ambiguous otherwise). ``key``, the event's partition key when
    known, limits every topic to its partition. Raises UnknownTopic when the events topic
    does not exist, BrokerUnavailable when Kafka does not answer, ToolError on a bad query.
    """
    if event_id is not None and webhook_id is not None and event_id != webhook_id:
        raise ToolError(f"give EVENT_ID or --webhook-id, not both ({event_id!r}, {webhook_id!r})")
    wanted = event_id if event_id is not None else webhook_id
    if not wanted:
        raise ToolError("give the event's id (EVENT_ID), or --source and --webhook-id")
    started = time.monotonic()
    if since_ms is None:
        since_ms = int((time.time() - DEFAULT_SINCE_S) * 1000)
    since = datetime.fromtimestamp(since_ms / 1000, UTC)
    topics = Topics(settings.topic_prefix)
    consumer = new_consumer(settings)
    try:
        await consumer.start()
        search = _Search(consumer, topics, wanted, source, since, orjson.dumps(wanted)[1:-1])
        found = await search.fix_windows()
        given = [key.encode()] if key is not None else []
        await search.read({catalogue.EVENTS: _select(found[catalogue.EVENTS], given)})
        if len(search.sources) > 1:
            raise ToolError(
                f"event id {wanted!r} was received from several sources "
                f"({', '.join(sorted(search.sources))}): give --source"
            )
        keys = search.keys | set(given)
        if search.sources:
            search.source = next(iter(search.sources))
        selected = {
            role: _select(tps, keys) for role, tps in found.items() if role != catalogue.EVENTS
        }
        await search.read(selected)
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot read the {topics.prefix}.* topics: {exc}") from exc
    finally:
        await consumer.stop()
    hops = sorted(search.hops, key=lambda h: (h.timestamp_ms, _RANK[h.role], h.partition, h.offset))
    _mark_replays(hops)
    found_key = next(
        (
            str(h.value["partitionkey"])
            for h in hops
            if h.role == catalogue.EVENTS
            and h.value
            and isinstance(h.value.get("partitionkey"), str)
        ),
        key,
    )
    return Journey(
        event_id=wanted,
        source=search.source,
        hops=hops,
        key=found_key,
        since_ms=since_ms,
        searched=search.searched,
        elapsed_s=time.monotonic() - started,
    )


# --- text --------------------------------------------------------------------------------


def duration_text(ms: int) -> str:
    """A hop latency as people read it: ``212 ms``, ``1.2 s``, ``4 min 05 s``, ``2 h 10 min``,
    ``3 d 4 h``."""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    if seconds < 86_400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86_400} d {seconds % 86_400 // 3600} h"


def journey_lines(journey: Journey) -> list[str]:
    """The text ``hookstream trace`` prints: a title, one line per hop (time, +latency from the
    previous hop, topic[partition]@offset, kind, summary), and what was searched."""
    total = journey.total_ms()
    who = f"{journey.source}/{journey.event_id}" if journey.source else journey.event_id
    trace = f"  trace {journey.trace_id}" if journey.trace_id else ""
    title = f"event {who}  key {journey.key or '?'}{trace}  {_count(len(journey.hops), 'hop')}"
    lines = [title + (f" in {duration_text(total)}" if total is not None else "")]
    where_width = max((len(h.where) for h in journey.hops), default=0)
    for hop, latency in zip(journey.hops, journey.latencies_ms(), strict=True):
        step = "" if latency is None else "+" + duration_text(latency)
        lines.append(
            f"{iso_ms(hop.timestamp_ms)}  {step:>12}  {hop.where:<{where_width}}  "
            f"{hop.kind:<11}  {hop.summary}"
        )
    lines.append(journey.searched_text())
    return lines
