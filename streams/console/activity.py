"""What each flow did over the last minutes, read from Kafka (the overview's charts).

Per flow and time bucket: events in (``<prefix>.events``, attributed to the flows that match
their source and type, as the worker does), results, their cost and mean model latency
(``<prefix>.results``), and dead letters (``<prefix>.dlq``, by the flow header or value). The
topics are read, not the processes' metrics, so the figures are the same whatever the number
of workers and survive their restarts. At most :data:`MAX_RECORDS_PER_TOPIC` records per topic
are read (the newest); the page says when a window held more.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from schemas.config import HookstreamConfig, KafkaSettings
from schemas.errors import BrokerUnavailable, UnknownTopic
from schemas.topics import Topics
from streams.kafka.reader import Window, new_consumer, read_window, window

MAX_RECORDS_PER_TOPIC = 20_000
NO_FLOW = "(no flow)"


@dataclass
class FlowSeries:
    """One flow's values per bucket."""

    events: list[float]
    results: list[float]
    dead_letters: list[float]
    cost_usd: list[float]
    latency_sum_ms: list[float]

    @classmethod
    def empty(cls, buckets: int) -> FlowSeries:
        return cls(*([0.0] * buckets for _ in range(5)))

    @property
    def mean_latency_ms(self) -> list[float]:
        return [s / n if n else 0.0 for s, n in zip(self.latency_sum_ms, self.results, strict=True)]


@dataclass
class Activity:
    start_ms: int
    bucket_s: int
    buckets: int
    flows: dict[str, FlowSeries] = field(default_factory=dict)
    truncated: list[str] = field(default_factory=list)  # topics read only in part
    missing: list[str] = field(default_factory=list)  # topics that do not exist yet

    def series(self, flow: str) -> FlowSeries:
        if flow not in self.flows:
            self.flows[flow] = FlowSeries.empty(self.buckets)
        return self.flows[flow]

    def bucket(self, timestamp_ms: int) -> int | None:
        index = (timestamp_ms - self.start_ms) // (self.bucket_s * 1000)
        return int(index) if 0 <= index < self.buckets else None


def _newest(win: Window, limit: int) -> tuple[Window, bool]:
    """At most ``limit`` records of ``win``, the newest of each partition: an equal share per
    partition, what a short partition leaves going to the others."""
    if win.size <= limit:
        return win, False
    sizes = sorted(win.ranges.items(), key=lambda item: item[1][1] - item[1][0])
    ranges = {}
    left = limit
    for done, (tp, (start, end)) in enumerate(sizes):
        take = min(end - start, left // (len(sizes) - done))
        ranges[tp] = (end - take, end)
        left -= take
    return Window(ranges), True


def _json(value: bytes | None) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


async def _records(settings: KafkaSettings, topic: str, since: datetime) -> tuple[list[Any], bool]:
    consumer = new_consumer(settings)
    try:
        await consumer.start()
        win, truncated = _newest(await window(consumer, topic, since), MAX_RECORDS_PER_TOPIC)
        found = [record async for batch in read_window(consumer, win) for record in batch]
        return found, truncated
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot read {topic}: {exc}") from exc
    finally:
        await consumer.stop()


def _flows_of_event(config: HookstreamConfig, value: dict[str, Any] | None) -> list[str]:
    if value is None:
        return [NO_FLOW]
    source, kind = value.get("source"), value.get("type")
    if not isinstance(source, str) or not isinstance(kind, str):
        return [NO_FLOW]
    return [flow.name for flow in config.flows_for(source, kind)] or [NO_FLOW]


def _dead_letter_flow(record: Any) -> str:
    for name, raw in record.headers:
        if name == "hookstream-flow":
            return bytes(raw).decode(errors="replace")
    value = _json(record.value)
    flow = value.get("flow") if value else None
    return flow if isinstance(flow, str) else NO_FLOW


async def activity(config: HookstreamConfig, *, minutes: int = 60, buckets: int = 30) -> Activity:
    """The last ``minutes`` of every flow, in ``buckets`` buckets."""
    topics = Topics(config.kafka.topic_prefix)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    bucket_s = max(minutes * 60 // buckets, 1)
    start_ms = now_ms - bucket_s * buckets * 1000
    result = Activity(start_ms=start_ms, bucket_s=bucket_s, buckets=buckets)
    for flow in config.flows:
        result.series(flow.name)
    since = datetime.fromtimestamp(start_ms / 1000, UTC)
    names = (topics.events, topics.results, topics.dlq)
    reads = await asyncio.gather(
        *(_records(config.kafka, name, since) for name in names), return_exceptions=True
    )
    read: dict[str, list[Any]] = defaultdict(list)
    for name, outcome in zip(names, reads, strict=True):
        if isinstance(outcome, UnknownTopic):
            result.missing.append(name)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            read[name], truncated = outcome
            if truncated:
                result.truncated.append(name)
    for record in read[topics.events]:
        index = result.bucket(record.timestamp)
        if index is not None:
            for name in _flows_of_event(config, _json(record.value)):
                result.series(name).events[index] += 1
    for record in read[topics.results]:
        index = result.bucket(record.timestamp)
        value = _json(record.value)
        if index is None or value is None:
            continue
        series = result.series(str(value.get("flow") or NO_FLOW))
        series.results[index] += 1
        series.cost_usd[index] += float(value.get("cost_usd") or 0.0)
        series.latency_sum_ms[index] += float(value.get("latency_ms") or 0.0)
    for record in read[topics.dlq]:
        index = result.bucket(record.timestamp)
        if index is not None:
            result.series(_dead_letter_flow(record)).dead_letters[index] += 1
    return result
