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
:meth:`Replayer.estimate` says, per flow, how many (flow, event) tasks the AI answer cache
would answer and how many would call the model, with their tokens and dollars, so the CLI can
print it and ask before it starts. Pricing one task needs the AI stage's own request
rendering and cache keys, which live in ``agents`` (a sibling this layer may not import): the
caller passes a :class:`Pricer` (the CLI's is :mod:`streams.cli.replay_cost`). The replay
reads the results topic from the window's first record on to find each event's earlier
result: its enrichment (an events-topic replay has none yet) and its token usage, the best
guess of what the same call costs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from schemas import topics as catalogue
from schemas.config import HookstreamConfig
from schemas.config_flows import FlowConfig
from schemas.errors import BrokerUnavailable, RecordTooLarge, ToolError, UnknownTopic
from schemas.events import DeadLetter
from schemas.headers import REPLAY_HEADER
from streams.kafka import produce_encoding
from streams.kafka.connection import client_kwargs
from streams.kafka.reader import (
    Position,
    RawRecord,
    Window,
    new_consumer,
    partitions_of,
    read_window_raw,
    window,
)
from streams.kafka.size_limits import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    describe_max_message_bytes,
    fit_batches,
    lone_record_bytes,
)
from streams.ops.replay_sample import picking, reaches, slices_by_partition

Progress = Callable[[int, int], None]
BATCH_BYTES = 1024 * 1024  # per partition: fetched at a time, and per producer batch
_PENDING_MAX = 64  # submitted batches not yet acknowledged (≤ 64 MiB in memory)
_PRODUCERS = 2
STAGE = "replay"  # a dead letter's stage: a record the topic refuses with the replay header


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    source: str | None = None
    type: str | None = None
    flow: str | None = None

    @property
    def empty(self) -> bool:
        return self.source is None and self.type is None and self.flow is None


# How the AI stage would answer one (flow, event) of a replay: from the answer cache, with a
# model call, "unknown" when the cache cannot be checked (the prompt needs an enrichment the
# replay cannot know yet: it is counted as a call, an upper bound), or "invalid" (the event
# would be dead-lettered before any call).
# "none": a flow with no AI step (no call); "steps": a multi-step flow, its steps in parts.
Outcome = Literal["cache", "call", "unknown", "invalid", "none", "steps"]


@dataclass(frozen=True, slots=True)
class Original:
    """What an event's earlier result on the results topic says about its next call."""

    enrichment: dict[str, Any]
    model: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Priced:
    """One (flow, event): its outcome, and for a call its tokens and dollars.

    ``from_usage``: the tokens are the earlier result's usage, not prompt characters / 4 plus
    ``max_tokens``; ``has_price``: the model has a price in the provider's ``prices``.
    """

    outcome: Outcome
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    from_usage: bool = False
    has_price: bool = True
    batch_cost_usd: float = 0.0  # the same call through the provider's batch API
    parts: tuple[Priced, ...] = ()  # a multi-step flow: each step's, in order


class Pricer(Protocol):
    """Prices one (flow, event) the way the AI stage would answer it."""

    def price(
        self, flow: FlowConfig, role: str, value: dict[str, Any], original: Original | None
    ) -> Priced: ...


@dataclass
class FlowEstimate:
    """One flow's share of a replay's AI tasks (all of them, or a sample scaled up)."""

    tasks: int = 0  # every task of the flow in the window
    priced: int = 0  # of which priced one by one (all, unless the window was sampled)
    cached: int = 0
    calls: int = 0  # model calls, "unknown" ones included
    unknown: int = 0
    invalid: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    batch_cost_usd: float = 0.0  # the calls at batch prices (replay --batch)
    from_usage: int = 0  # calls whose tokens are an earlier result's usage
    unpriced: int = 0  # calls of a model without a price (counted as $0)
    no_ai: int = 0  # tasks of a flow with no AI step: no call
    steps: int = 0  # a multi-step flow's steps (its calls are per step); 0 otherwise

    def add(self, priced: Priced) -> None:
        self.priced += 1
        self.steps = max(self.steps, len(priced.parts))
        self._count(priced)

    def _count(self, priced: Priced) -> None:
        """One task's calls: a multi-step flow's are its steps' (each cached or a call)."""
        for part in priced.parts:
            self._count(part)
        self.no_ai += priced.outcome == "none"
        if priced.outcome in ("none", "steps"):
            return
        if priced.outcome == "cache":
            self.cached += 1
            return
        if priced.outcome == "invalid":
            self.invalid += 1
            return
        self.calls += 1
        self.unknown += priced.outcome == "unknown"
        self.prompt_tokens += priced.prompt_tokens
        self.completion_tokens += priced.completion_tokens
        self.cost_usd += priced.cost_usd
        self.batch_cost_usd += priced.batch_cost_usd
        self.from_usage += priced.from_usage
        self.unpriced += not priced.has_price

    def scale(self) -> None:
        """From the priced sample to all the flow's tasks (nothing to do when all were)."""
        if not self.priced or self.priced == self.tasks:
            return
        factor = self.tasks / self.priced
        for name in _SCALED:
            setattr(self, name, round(getattr(self, name) * factor))
        self.cost_usd *= factor
        self.batch_cost_usd *= factor


_SCALED = (
    "cached",
    "calls",
    "unknown",
    "invalid",
    "prompt_tokens",
    "completion_tokens",
    "from_usage",
    "unpriced",
    "no_ai",
)
# Tasks priced one by one; a larger window is priced from a sample of about this many
# records, read in SAMPLE_ROUNDS slices spread evenly over each partition (sample_windows).
PRICED_MAX = 10_000
SAMPLE_ROUNDS = 10
# Up to this many records, a replay that asks nobody (--yes) takes its estimate's sample from
# the copy's own reads (Estimating): the window is read once, and the line comes once it has
# been read (1,000,000 records: 3-8 s at the copy's own rate in bench/replay, 120,000-320,000
# records/s). A larger window's sample is read first, a small part of it, so that the line
# comes before a long copy.
ONE_PASS_MAX = 1_000_000
# Keys and values of a window read whole by the estimate (up to PRICED_MAX records) that it
# keeps for the copy after the question, which then does not fetch the window again; a window
# holding more is fetched again, as before.
KEPT_BYTES_MAX = 64 * 1024 * 1024


def sample_windows(win: Window, records: int, rounds: int = SAMPLE_ROUNDS) -> list[Window]:
    """``rounds`` windows, each a slice of every partition of ``win``, evenly spaced over it,
    that hold about ``records`` records in all (every partition in proportion to its share).

    An estimate read from them costs a few fetches per slice instead of the whole window (one
    pass over 100,000 events was ~0.9 s of a 1.5 s replay: bench/replay, issue 16).
    """
    fraction = min(1.0, records / max(win.size, 1))
    slices: list[Window] = []
    for index in range(rounds):
        ranges: dict[TopicPartition, tuple[int, int]] = {}
        for tp, (start, end) in win.ranges.items():
            length = end - start
            if length <= 0:
                continue
            take = max(1, math.ceil(length * fraction / rounds))
            first = start + index * length // rounds
            ranges[tp] = (first, min(end, first + take))
        slices.append(Window(ranges))
    return slices


@dataclass
class ModelEstimate:
    """What replaying a window costs in AI tasks: per flow, and summed."""

    records: int = 0  # records the filters select
    by_flow: dict[str, FlowEstimate] = field(default_factory=dict)
    stride: int = 1  # every stride-th task was priced, the figures scaled
    sampled: int = 0  # records read when only a sample of the window was (0: all were)
    window: int = 0  # the window's records

    def total(self) -> FlowEstimate:
        total = FlowEstimate()
        for flow in self.by_flow.values():
            for name in total.__dataclass_fields__:
                setattr(total, name, getattr(total, name) + getattr(flow, name))
        return total

    def line(self, topic: str) -> str:
        """The one line the CLI prints, saying what is counted and what is estimated."""
        t = self.total()
        flows = ", ".join(_flow_share(name, f) for name, f in self.by_flow.items())
        estimated = t.calls - t.from_usage
        notes = [
            f"tokens of {t.from_usage:,} call(s) from their earlier results' usage, "
            f"{estimated:,} estimated as prompt characters / 4 + max_tokens"
        ]
        if t.unknown:
            notes.append(
                f"{t.unknown:,} whose cache entry cannot be checked (the prompt needs an "
                "enrichment or an earlier step's answer, not known before the replay) counted "
                "as calls"
            )
        if t.invalid:
            notes.append(f"{t.invalid:,} invalid event(s) that would be dead-lettered")
        if t.unpriced:
            notes.append(f"{t.unpriced:,} call(s) of a model without a price counted as $0")
        if self.sampled:
            notes.append(
                f"{t.priced:,} tasks priced from a sample of {self.sampled:,} of the window's "
                f"{self.window:,} records, read in {SAMPLE_ROUNDS} slices spread over it, the "
                "figures scaled to all"
            )
        elif t.priced < t.tasks:
            notes.append(
                f"{t.priced:,} of the {t.tasks:,} tasks priced (one in {self.stride:,}), "
                "the figures scaled to all"
            )
        about = "~" if self.sampled else ""
        return (
            f"replay of {topic}: {about}{self.records:,} record(s), {about}{t.tasks:,} AI "
            "task(s): "
            f"{t.cached:,} from the AI cache, {t.calls:,} model call(s) ({flows or 'no flow'}); "
            f"estimated cost ${t.cost_usd:,.4f} (${t.batch_cost_usd:,.4f} with --batch) for "
            f"~{t.prompt_tokens:,} prompt + "
            f"{t.completion_tokens:,} completion tokens ({'; '.join(notes)})"
        )


def _flow_share(name: str, flow: FlowEstimate) -> str:
    """One flow's part of the line: cached and called (per step for a multi-step flow)."""
    if flow.no_ai and not (flow.calls or flow.cached):
        return f"{name}: no AI step, 0 calls"
    steps = f" over {flow.steps} steps" if flow.steps else ""
    return f"{name}: {flow.cached:,} cached + {flow.calls:,} call(s){steps}"


class _Stamped(RawRecord, Protocol):
    @property
    def timestamp(self) -> int: ...


class _Sample:
    """The estimate's tasks as its sample is read: every (flow, event) task of the records
    it is given, and the counts to scale to the window.

    Fed slice by slice by :meth:`Replayer.estimate`, or by the copy (:meth:`Replayer.run`
    with an :class:`Estimating`) with the records of each fetched batch inside the same
    slices (:func:`~streams.ops.replay_sample.picking`), so both price the same records.
    """

    def __init__(self, replayer: Replayer, estimate: ModelEstimate) -> None:
        self.replayer = replayer
        self.estimate = estimate
        self.sampled = estimate.window > PRICED_MAX
        # (flow, value, identity) per task.
        self.kept: list[tuple[FlowConfig, dict[str, Any], tuple[str, str, str]]] = []
        self.earliest_ms: int | None = None
        self.read = 0
        self.selected = 0

    def take(self, records: Iterable[_Stamped]) -> None:
        """Count ``records`` and keep their tasks. The loop's lookups are hoisted: it runs
        per record of the sample, up to PRICED_MAX times per replay (bench/replay)."""
        replayer = self.replayer
        kept, earliest_ms = self.kept, self.earliest_ms
        read = selected = 0
        decode, flows_of, identity = replayer._decode, replayer._flows, replayer._identity
        selects = None if replayer.selection.empty else replayer.selects
        calls_model, by_flow = replayer.calls_model, self.estimate.by_flow
        for record in records:
            read += 1
            value = decode(record.value)
            if selects is not None and not selects(value):
                continue
            selected += 1
            if not calls_model:
                continue
            flows = flows_of(value)
            if not flows:
                continue
            stamp = record.timestamp
            if earliest_ms is None or stamp < earliest_ms:
                earliest_ms = stamp
            for flow in flows:
                share = by_flow.get(flow.name)
                if share is None:
                    share = by_flow[flow.name] = FlowEstimate()
                share.tasks += 1
                kept.append((flow, value, identity(flow.name, value)))
        self.earliest_ms = earliest_ms
        self.read += read
        self.selected += selected

    def scale(self) -> None:
        """The records and tasks counted, scaled from the sample to the window."""
        estimate = self.estimate
        estimate.records = self.selected
        if self.sampled and self.read:
            estimate.sampled = self.read
            factor = estimate.window / self.read
            estimate.stride = max(1, round(factor))
            estimate.records = round(estimate.records * factor)
            for share in estimate.by_flow.values():
                share.tasks = round(share.tasks * factor)


@dataclass
class ReplayStats:
    replay_id: str
    window: int = 0
    read: int = 0
    replayed: int = 0
    filtered_out: int = 0
    # Records the topic refuses once they carry the replay header: on the DLQ (_Refused).
    dead_lettered: int = 0
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.replayed / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Estimating:
    """The estimate made by the copy itself (:meth:`Replayer.run`), for a replay that asks
    nobody (``--yes``): the window is read once, and its sample's records are taken from the
    copy's reads instead of being fetched again before it (bench/replay, issue 16).

    ``ready`` (the pricer's answer cache loading) is awaited before the first record is
    written, so the cache the estimate sees holds nothing this replay caused; ``report``
    receives the estimate once it is priced, when the window has been read.
    """

    pricer: Pricer
    report: Callable[[ModelEstimate], None]
    ready: Awaitable[object] | None = None


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
        # The topic's max.message.bytes (None: not readable), once connected.
        self._limit: int | None = None
        self._window: asyncio.Future[Window] | None = None
        self._clients: tuple[AIOKafkaConsumer, list[AIOKafkaProducer]] | None = None
        self._connected: asyncio.Future[list[TopicPartition]] | None = None
        self._flows_of: dict[tuple[str, str], list[FlowConfig]] = {}
        # The window as the estimate read it, when whole and small (KEPT_BYTES_MAX): run()
        # copies these instead of fetching it again.
        self._read: list[tuple[int, list[RawRecord]]] | None = None

    @property
    def calls_model(self) -> bool:
        """Does a replay of this topic reach the AI stage?"""
        return self.role in (catalogue.EVENTS, catalogue.ENRICHED)

    def _flows(self, value: dict[str, Any]) -> list[FlowConfig]:
        if self.role == catalogue.ENRICHED:
            name = value.get("flow")
            return [f for f in self.config.flows if f.name == name]
        event = _event_of(self.role, value)
        kind = (str(event.get("source", "")), str(event.get("type", "")))
        flows = self._flows_of.get(kind)
        if flows is None:  # a window has few (source, type) pairs and many events
            flows = self._flows_of[kind] = self.config.flows_for(*kind)
        return flows

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

    def _identity(self, flow: str, value: dict[str, Any]) -> tuple[str, str, str]:
        event = _event_of(self.role, value)
        return flow, str(event.get("source", "")), str(event.get("id", ""))

    async def _fixed_window(
        self, consumer: Any, partitions: list[TopicPartition] | None = None
    ) -> Window:
        # One window per replay, whichever client asks first (the estimate's consumer and the
        # copy's may ask at once): the estimate prices what the copy copies.
        if self._window is None:
            self._window = asyncio.ensure_future(
                window(consumer, self.topic, self.start, self.end, partitions=partitions)
            )
        return await asyncio.shield(self._window)

    @staticmethod
    def _decode(value: bytes | None) -> dict[str, Any]:
        try:
            decoded = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            return {}
        return decoded if isinstance(decoded, dict) else {}

    async def estimate(
        self, pricer: Pricer, *, ready: Awaitable[object] | None = None
    ) -> ModelEstimate:
        """What the window's AI tasks would cost: the window read once, then the results.

        A window of up to ``PRICED_MAX`` records is read whole; a larger one as a sample of
        about ``PRICED_MAX`` records (:func:`sample_windows`), its counts scaled to the
        window. Every (flow, event) task read is kept; then the results topic, from the
        earliest kept task's time on, gives the kept tasks' earlier results
        (:class:`Original`), and each kept task is priced by ``pricer``. (Before, the window
        was read whole twice, once to find the tasks and once to price them: issue 16.)

        ``ready``: what ``pricer`` still waits for (the CLI's loads the answer cache), awaited
        before the first task is priced. It, and the results topic's consumer, connect while
        the window is read: each is a fixed cost of a replay (bench/replay).
        """
        consumer = new_consumer(
            self.config.kafka, max_partition_fetch_bytes=self.batch_bytes, check_crcs=False
        )
        results = self._results_consumer()
        results_started = asyncio.ensure_future(results.start())
        estimate = ModelEstimate()
        try:
            await consumer.start()
            win = await self._fixed_window(consumer)
            estimate.window = win.size
            # Past PRICED_MAX records, a sample of the window is read and priced, and the
            # counts and figures scaled (an exact pass over 100,000 events took ~10 s, 15 times
            # the replay's own copy; reading all of them without pricing, ~0.9 s).
            sample = _Sample(self, estimate)
            # A window read whole is kept for run(), if small: the copy after the question
            # then reads it once (issue 16).
            keep: list[tuple[int, list[RawRecord]]] | None = None if sample.sampled else []
            kept_bytes = 0
            for part in sample_windows(win, PRICED_MAX) if sample.sampled else [win]:
                async for partition, records in read_window_raw(consumer, part):
                    if keep is not None:
                        batch = list(records)
                        kept_bytes += sum(len(r.key or b"") + len(r.value or b"") for r in batch)
                        keep = keep if kept_bytes <= KEPT_BYTES_MAX else None
                        if keep is not None:
                            keep.append((partition, batch))
                        records = batch
                    sample.take(cast("Iterable[_Stamped]", records))
            self._read = keep
            await self._priced(sample, pricer, results, results_started, ready)
        except KafkaError as exc:
            raise BrokerUnavailable(f"cannot read {self.topic}: {exc}") from exc
        finally:
            await asyncio.gather(self._stop_results(results, results_started), consumer.stop())
        return estimate

    def _results_consumer(self) -> AIOKafkaConsumer:
        return new_consumer(
            self.config.kafka, max_partition_fetch_bytes=self.batch_bytes, check_crcs=False
        )

    @staticmethod
    async def _stop_results(results: AIOKafkaConsumer, started: asyncio.Future[None]) -> None:
        if not started.done():
            started.cancel()
        with contextlib.suppress(asyncio.CancelledError, KafkaError):
            await started
        await results.stop()

    async def _priced(
        self,
        sample: _Sample,
        pricer: Pricer,
        results: AIOKafkaConsumer,
        results_started: asyncio.Future[None],
        ready: Awaitable[object] | None,
    ) -> None:
        """The sample's counts scaled to the window, then its tasks' earlier results read
        from the results topic and each task priced (:meth:`estimate`)."""
        estimate = sample.estimate
        sample.scale()
        if not sample.kept or sample.earliest_ms is None:
            return
        wanted = {key for _, _, key in sample.kept}
        await results_started
        originals = await self._originals(results, wanted, sample.earliest_ms)
        if ready is not None:
            await ready
        price, role, by_flow = pricer.price, self.role, estimate.by_flow
        for flow, value, key in sample.kept:
            by_flow[flow.name].add(price(flow, role, value, originals.get(key)))
        for share in by_flow.values():
            share.scale()

    async def _originals(
        self, consumer: AIOKafkaConsumer, wanted: set[tuple[str, str, str]], since_ms: int
    ) -> dict[tuple[str, str, str], Original]:
        """The earlier result of each wanted task, from the results topic (written after its
        event, so read from the window's first record on); none when the topic is missing.

        ``consumer``: one of its own (started), as one with partitions assigned asks the
        broker's metadata of those topics only, and would not see the results topic.
        """
        results = catalogue.Topics(self.config.kafka.topic_prefix).results
        try:
            win = await window(consumer, results, datetime.fromtimestamp(since_ms / 1000, UTC))
            return await self._read_originals(consumer, win, wanted)
        except UnknownTopic:
            return {}

    async def _read_originals(
        self, consumer: Any, win: Window, wanted: set[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], Original]:
        """Read from the fetched batches (no ConsumerRecord per record), and only until every
        wanted task's result was found."""
        found: dict[tuple[str, str, str], Original] = {}
        own = (REPLAY_HEADER, self.replay_id.encode())
        async for _, records in read_window_raw(consumer, win):
            for record in records:
                value = self._decode(record.value)
                event = value.get("event")
                if not isinstance(event, dict):
                    continue
                key = (str(value.get("flow")), str(event.get("source")), str(event.get("id")))
                if key not in wanted or key in found:
                    continue
                if own in record.headers:  # this replay's own (copied while estimating)
                    continue
                usage = value.get("usage")
                usage = usage if isinstance(usage, dict) else {}
                enrichment = value.get("enrichment")
                found[key] = Original(
                    enrichment=enrichment if isinstance(enrichment, dict) else {},
                    model=str(value.get("model", "")),
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0),
                )
            if len(found) == len(wanted):
                break
        return found

    def prepare(self) -> None:
        """Start connecting the copy's clients in the background (bootstrap, metadata, the
        idempotent producers' ids, the topic's leaders), so that they connect while the
        estimate reads and prices the window instead of after it: connections and metadata
        waits are a fixed cost of every replay (bench/replay, issue 16). Nothing is read or
        written before :meth:`run`; :meth:`close` stops the clients if it never comes."""
        self._prepared()

    def _prepared(
        self,
    ) -> tuple[AIOKafkaConsumer, list[AIOKafkaProducer], asyncio.Future[list[TopicPartition]]]:
        if self._clients is not None and self._connected is not None:
            return (*self._clients, self._connected)
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
        # Its produce requests (MBs of copied batches) encoded with one copy of the batches
        # instead of six (streams.kafka.produce_encoding; bench/replay, issue 16).
        produce_encoding.install()
        self._clients = (consumer, producers)
        self._connected = asyncio.ensure_future(self._connect(consumer, producers))
        return consumer, producers, self._connected

    async def _connect(
        self, consumer: AIOKafkaConsumer, producers: list[AIOKafkaProducer]
    ) -> list[TopicPartition]:
        # All connect (bootstrap, metadata, the producers' ids) at once: start-up is a
        # fixed cost every replay pays, a third of a 1,000-record one (bench/replay).
        await asyncio.gather(consumer.start(), *(p.start() for p in producers))
        # The producers learn the topic's leaders while the window is fixed, not on their
        # first batch, which would wait for it; only once the consumer has seen that the
        # topic exists (its metadata request lists every topic), as a producer's names it,
        # which creates a mistyped topic on a broker with auto.create.topics.enable.
        partitions = await partitions_of(consumer, self.topic)
        limit, *_ = await asyncio.gather(
            describe_max_message_bytes(producers[0].client, self.topic, 5.0),
            self._fixed_window(consumer, partitions),
            *(p.partitions_for(self.topic) for p in producers),
        )
        for producer in producers:  # their 1 MiB batches: Kafka's default limit, not every topic's
            fit_batches(producer, limit)
        self._limit = limit
        return partitions

    async def close(self) -> None:
        """Stop the copy's clients (after :meth:`run`, or instead of it)."""
        connected, clients = self._connected, self._clients
        if connected is None or clients is None:
            return
        self._connected = self._clients = None
        if not connected.done():
            connected.cancel()
        with contextlib.suppress(asyncio.CancelledError, KafkaError, UnknownTopic):
            await connected
        consumer, producers = clients
        await asyncio.gather(*(p.stop() for p in producers))
        await consumer.stop()

    async def run(
        self, progress: Progress | None = None, *, estimating: Estimating | None = None
    ) -> ReplayStats:
        """Re-inject the window; returns once every replayed record is acknowledged (acks=all).

        Records go from the fetched batches (:func:`~streams.kafka.reader.read_window_raw`)
        straight into one producer batch per partition (:class:`_PartitionBatch`): no
        ``ConsumerRecord`` and no ``producer.send`` future per record, which were most of a
        replay's time (bench/replay).

        With ``estimating``, the copy also makes the estimate (:class:`Estimating`): the
        records of the sample's slices are kept as they are copied, and priced once the
        window has been read, while the last batches wait for their acks. A window of more
        than ``ONE_PASS_MAX`` records is estimated first (:meth:`estimate`): its sample is a
        small part of it, and its line comes before a long copy, not after it.
        """
        stats = ReplayStats(self.replay_id)
        consumer, producers, connected = self._prepared()
        # The results topic's consumer (and its start), for the estimate's earlier results.
        results: tuple[AIOKafkaConsumer, asyncio.Future[None]] | None = None
        marker = (REPLAY_HEADER, self.replay_id.encode())
        only_marker = [marker]
        selection = None if self.selection.empty else self
        decode = self._decode
        started = time.monotonic()
        try:
            win = await self._fixed_window(consumer, await connected)
            stats.window = win.size
            if estimating is not None and win.size > ONE_PASS_MAX:
                estimate = await self.estimate(estimating.pricer, ready=estimating.ready)
                estimating.report(estimate)
                estimating = None
            sample: _Sample | None = None
            slices: dict[int, deque[tuple[int, int]]] = {}
            if estimating is not None:
                reader = self._results_consumer()
                results = reader, asyncio.ensure_future(reader.start())
                sample = _Sample(self, ModelEstimate(window=win.size))
                slices = slices_by_partition(
                    sample_windows(win, PRICED_MAX) if sample.sampled else [win]
                )
                if estimating.ready is not None:
                    await estimating.ready
            writer = _Writer(producers, self.topic)
            limit = self._limit
            dlq = catalogue.Topics(self.config.kafka.topic_prefix).dlq
            letters = _Refused(producers[0], self.topic, dlq)
            kept, self._read = self._read, None
            source = (
                _again(kept)
                if kept is not None and estimating is None
                else read_window_raw(consumer, win)
            )
            async for partition, records in source:
                picked: list[_Stamped] = []
                ahead = slices.get(partition)
                if ahead and reaches(records, ahead):
                    stamped = picking(cast("Iterable[_Stamped]", records), ahead, picked)
                    records = stamped
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
                    if count and append(count, None, record.key, value, headers) is not None:
                        count += 1
                        continue
                    if count:  # full: the record starts the partition's next batch
                        batch.count = count
                        batch = await writer.submit(partition)
                        append, count = batch.append, 0
                    # An empty batch takes any record, even one the topic refuses: that
                    # one is dead-lettered instead (checked once a batch, not per record).
                    if limit is not None:
                        size = lone_record_bytes(record.key, value, headers)
                        if size > limit:
                            await letters.write(partition, record, headers, size, limit)
                            continue
                    append(0, None, record.key, value, headers)
                    count = 1
                batch.count = count
                if picked and sample is not None:
                    sample.take(picked)
                stats.read += read
                stats.dead_lettered = letters.count
                stats.replayed = stats.read - stats.filtered_out - stats.dead_lettered
                if progress is not None:
                    progress(stats.read, stats.window)
            await letters.finish()
            if estimating is None or sample is None or results is None:
                await writer.finish()
            else:
                # Priced while the last batches wait for their acks.
                finishing = asyncio.ensure_future(writer.finish())
                try:
                    await self._priced(sample, estimating.pricer, *results, estimating.ready)
                    estimating.report(sample.estimate)
                finally:
                    await finishing
        except MessageSizeTooLargeError as exc:  # only where the topic's limit was not read
            raise ToolError(
                f"replay {self.replay_id} of {self.topic} stopped: Kafka refused a batch as too "
                f"large ({exc}). The topic's max.message.bytes could not be read "
                "(DescribeConfigs), so the replay could not keep its batches under it; part of "
                "the window may be written already (run again, the replay writes all of it "
                "again under a new id: narrow --from/--to to what is left). Raise the topic's "
                "limit (docs/operations.md) or allow the replay to describe it"
            ) from exc
        except KafkaError as exc:
            raise BrokerUnavailable(f"replay of {self.topic} failed: {exc}") from exc
        finally:
            if results is not None:
                await self._stop_results(*results)
            await self.close()
        stats.elapsed_s = time.monotonic() - started
        if progress is not None:
            progress(stats.read, stats.window)
        return stats


async def _again(
    read: list[tuple[int, list[RawRecord]]],
) -> AsyncIterator[tuple[int, Iterable[RawRecord]]]:
    """The window as :meth:`Replayer.estimate` read it, in the order it was read."""
    for partition, records in read:
        yield partition, records


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


class _Refused:
    """Dead letters of the records the replayed topic would refuse once they carry the replay
    header (over its ``max.message.bytes``, which the original may have been within by less
    than the header's ~30 bytes). Without them the broker refused the batch, the replay failed
    part-way with a misleading "check that Kafka runs", and every later record of the window
    was left unreplayed. A letter holds the record with the headers the replay gave it, so that
    ``hookstream dlq redrive``, once the topic's limit is raised, writes what the replay would
    have; one the DLQ cannot hold either goes without its value (``value_omitted``: the
    original stays at its coordinates, where a redrive reads it)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, dlq: str) -> None:
        self.producer = producer
        self.topic = topic
        self.dlq = dlq
        self.count = 0
        self._dlq_limit: int | None = None  # asked at the first letter
        self._sent: list[asyncio.Future[Any]] = []

    async def write(
        self,
        partition: int,
        record: RawRecord,
        headers: list[tuple[str, bytes]],
        size: int,
        limit: int,
    ) -> None:
        """Dead-letter ``record``, ``size`` bytes as a lone batch with ``headers`` (the
        replay's), over the topic's ``limit``."""
        refusal = RecordTooLarge(
            f"with the replay header the record is {size} bytes, more than topic {self.topic} "
            f"accepts (its max.message.bytes is {limit})"
        )
        letter = DeadLetter.of(
            refusal,
            stage=STAGE,
            original_topic=self.topic,
            original_partition=partition,
            original_offset=record.offset,
        )
        if self._dlq_limit is None:
            stated = await describe_max_message_bytes(self.producer.client, self.dlq, 5.0)
            # Unknown (not allowed to describe it): Kafka's default, so that the DLQ never
            # refuses a letter, which would stop the replay.
            self._dlq_limit = KAFKA_DEFAULT_MAX_MESSAGE_BYTES if stated is None else stated
        value = record.value or b""
        letter_headers = [*letter.to_headers(), *headers]
        if lone_record_bytes(record.key, value, letter_headers) > self._dlq_limit:
            letter = letter.without_value(
                len(value), f"topic {self.dlq} takes {self._dlq_limit} bytes at most"
            )
            value, letter_headers = b"", [*letter.to_headers(), *headers]
        self._sent.append(
            await self.producer.send(self.dlq, value, key=record.key, headers=letter_headers)
        )
        self.count += 1

    async def finish(self) -> None:
        """Wait until every letter is acknowledged."""
        sent, self._sent = self._sent, []
        await asyncio.gather(*sent)


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
