"""The worker's Prometheus metrics (served by ``hookstream worker --metrics-port``).

Labels are bounded: agent, flow, provider, model names from the config, outcome and token kind.
Never event ids or payload content.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class RunnerCounters(Protocol):
    """What :func:`watch_runner` reads of a runner (``agents.stages.runner.RunnerStats``)."""

    in_flight: int
    max_in_flight_seen: int
    handled: int


AI_CALLS = Counter(
    "hookstream_ai_calls_total",
    "Model calls, by outcome: ok, rate_limited, error, invalid_output.",
    ["provider", "model", "outcome"],
)
AI_CALL_SECONDS = Histogram(
    "hookstream_ai_call_seconds",
    "Wall time of model calls that answered.",
    ["provider", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
AI_TOKENS = Counter(
    "hookstream_ai_tokens_total",
    "Tokens used, by kind: prompt, completion.",
    ["provider", "model", "kind"],
)
AI_COST_USD = Counter(
    "hookstream_ai_cost_usd_total",
    "Cost of model calls from the price table.",
    ["provider", "model"],
)
AI_RETRIES = Counter("hookstream_ai_retries_total", "Calls that were a retry.", ["provider"])
AI_RATE_LIMITED = Counter("hookstream_ai_429_total", "429 answers received.", ["provider"])
AI_BUDGET_WAIT_SECONDS = Counter(
    "hookstream_ai_budget_wait_seconds_total",
    "Time calls waited for the RPM/TPM budget.",
    ["provider"],
)
AI_BREAKER_STATE = Gauge(
    "hookstream_ai_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", ["provider"]
)
AI_FALLBACKS = Counter(
    "hookstream_ai_fallbacks_total", "Results answered by a fallback, not the primary.", ["flow"]
)
AI_CACHE = Counter(
    "hookstream_ai_cache_lookups_total",
    "Answer cache lookups, by result: hit, miss.",
    ["flow", "result"],
)
AI_ANSWERS_REUSED = Counter(
    "hookstream_ai_answers_reused_total",
    "Results written from the answer journal after a restart instead of calling again.",
    ["flow"],
)
AI_BACKGROUND = Counter(
    "hookstream_ai_background_total",
    "Background responses (api: responses, background: true), by outcome: created; resumed "
    "(a recorded id polled again instead of a new response); expired (the recorded id was "
    "unknown, 404); failed, cancelled (replaced by a new one); timed_out (cancelled by us).",
    ["provider", "outcome"],
)
AI_FLOW_PAUSED = Gauge(
    "hookstream_ai_flow_paused",
    "1 while the flow is paused: its provider and every fallback unavailable.",
    ["flow"],
)
AI_FLOW_PAUSES = Counter(
    "hookstream_ai_flow_pauses_total",
    "Times the flow paused, by the error class that paused it.",
    ["flow", "cause"],
)
AI_PROBES = Counter(
    "hookstream_ai_probes_total",
    "Walks of a paused flow's provider chain (one call per provider) to see if it is back.",
    ["flow"],
)
AI_IN_FLIGHT = Gauge("hookstream_ai_in_flight", "Events inside the AI task, per flow.", ["flow"])
AI_BATCH_QUEUED = Counter(
    "hookstream_ai_batch_queued_total",
    "Requests of ai.mode: batch flows written to <prefix>.ai-batch for the batcher.",
    ["flow"],
)
DUPLICATES_SKIPPED = Counter(
    "hookstream_duplicates_skipped_total",
    "Events skipped because they were already processed (dedupe), by stage.",
    ["stage"],
)
RUNNER_IN_FLIGHT = Gauge("hookstream_runner_in_flight", "Events admitted, not yet done.", ["agent"])
RUNNER_MAX_IN_FLIGHT_SEEN = Gauge(
    "hookstream_runner_max_in_flight_seen", "Highest in-flight count since start.", ["agent"]
)
RUNNER_LIMIT = Gauge("hookstream_runner_max_in_flight", "The agent's in-flight bound.", ["agent"])
RUNNER_HANDLED = Gauge("hookstream_runner_handled", "Events done since start.", ["agent"])


def watch_runner(agent: str, stats: RunnerCounters, limit: int) -> None:
    """Expose a runner's live counters (read at scrape time, nothing to update)."""
    RUNNER_IN_FLIGHT.labels(agent).set_function(lambda: stats.in_flight)
    RUNNER_MAX_IN_FLIGHT_SEEN.labels(agent).set_function(lambda: stats.max_in_flight_seen)
    RUNNER_HANDLED.labels(agent).set_function(lambda: stats.handled)
    RUNNER_LIMIT.labels(agent).set(limit)
    watch_runner_total(agent, stats)


# --- every stage: dead letters, lookups, sinks, end-to-end latency, consumer lag -------------
DEAD_LETTERS = Counter(
    "hookstream_dead_letters_total",
    "Records put on the DLQ (acknowledged by Kafka), by stage and error class.",
    ["stage", "error_class"],
)
LOOKUP_SECONDS = Histogram(
    "hookstream_lookup_seconds",
    "Wall time of enrichment lookups, by outcome: ok, not_found (answered null), error.",
    ["flow", "lookup", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SINK_DELIVERIES = Counter(
    "hookstream_sink_deliveries_total",
    "Results a sink handled, by outcome: delivered, duplicate (delivered before), "
    "dead_lettered, dead_lettered_before (in the DLQ already), replay_skipped, skipped_when "
    "(the sink's when was false).",
    ["flow", "sink", "outcome"],
)
SINK_RETRIES = Counter(
    "hookstream_sink_retries_total",
    "Delivery attempts that retried a result after a failed attempt (outage probes included).",
    ["flow", "sink"],
)
SINK_DELIVERY_SECONDS = Histogram(
    "hookstream_sink_delivery_seconds",
    "Wall time of the attempt that delivered: the target's answer (a batching sink: until "
    "the batch holding the record was written).",
    ["flow", "sink"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SINK_PAUSED = Gauge(
    "hookstream_sink_paused",
    "1 while the sink is paused: its target is down and deliveries wait for a probe.",
    ["flow", "sink"],
)
SINK_PAUSES = Counter(
    "hookstream_sink_pauses_total",
    "Times the sink paused, by the error class that paused it.",
    ["flow", "sink", "cause"],
)
END_TO_END_SECONDS = Histogram(
    "hookstream_end_to_end_seconds",
    "From the webhook's receipt (the CloudEvent's time: the gateway's, else the events "
    "record's timestamp) to its delivery by the sink; live results only (no replays, redrives).",
    ["flow", "sink"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)


class _RunnerTotals(Collector):
    """``hookstream_runner_events_total``: the runners' done counts as a counter, so that
    ``rate()`` is right across restarts (``hookstream_runner_handled`` is a gauge)."""

    labelnames = ("agent",)

    def __init__(self) -> None:
        self.stats: dict[str, RunnerCounters] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "hookstream_runner_events", "Events done (acked) since start.", labels=["agent"]
        )
        for agent, stats in list(self.stats.items()):
            family.add_metric([agent], stats.handled)
        yield family


class _ConsumerLag(Collector):
    """``hookstream_consumer_lag_records``, read when Prometheus scrapes: per partition this
    process consumes, the partition's high watermark (the last fetch response's, kept by the
    Kafka client) minus the group's committed offset (the worker's: Faust's, after its last
    commit or the seek at assignment; the sink worker's: its own, read at assignment and
    updated at each commit). Nothing is done per event and no request is sent; after a rebalance
    only the partitions now assigned here are listed, so sum or max the series by group,
    topic and partition across processes. A partition this group never committed counts from
    offset 0; one whose high watermark is not known yet (no fetch since assignment) is left
    out.
    """

    labelnames = ("group", "topic", "partition")

    def __init__(self) -> None:
        self.readers: dict[str, Callable[[], list[tuple[str, int, int]]]] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "hookstream_consumer_lag_records",
            "Records not yet committed by the consumer group: high watermark minus committed "
            "offset, per partition assigned to this process.",
            labels=["group", "topic", "partition"],
        )
        for group, read in list(self.readers.items()):
            for topic, partition, lag in read():
                family.add_metric([group, topic, str(partition)], lag)
        yield family


def consumer_lag(app: Any) -> list[tuple[str, int, int]]:
    """(topic, partition, lag) for each partition assigned to ``app``'s consumer whose high
    watermark is known; [] before the consumer started or while a rebalance changes it."""
    consumer = getattr(app, "_consumer", None)  # app.consumer would create one
    if consumer is None:
        return []
    try:
        return partition_lags(consumer, getattr(consumer, "_committed_offset", {}))
    except Exception:  # noqa: BLE001 - not started yet, or a rebalance in the Kafka thread
        return []


def partition_lags(
    consumer: Any, committed: Mapping[Any, int | None]
) -> list[tuple[str, int, int]]:
    """(topic, partition, high watermark minus committed offset) per partition assigned to
    ``consumer`` (an aiokafka consumer, Faust's or the sink worker's) whose high watermark is
    known; a partition never committed counts from offset 0."""
    found: list[tuple[str, int, int]] = []
    for tp in sorted(consumer.assignment()):
        highwater = consumer.highwater(tp)
        if highwater is not None:
            offset = committed.get(tp) or 0
            found.append((tp.topic, tp.partition, max(highwater - offset, 0)))
    return found


RUNNER_TOTALS = _RunnerTotals()
CONSUMER_LAG = _ConsumerLag()
REGISTRY.register(RUNNER_TOTALS)
REGISTRY.register(CONSUMER_LAG)


def watch_runner_total(agent: str, stats: RunnerCounters) -> None:
    """Count a runner's done events in ``hookstream_runner_events_total``."""
    RUNNER_TOTALS.stats[agent] = stats


def watch_consumer(group: str, app: Any) -> None:
    """Report ``app``'s consumer lag as group ``group`` (its Kafka consumer group id)."""
    watch_lag(group, lambda: consumer_lag(app))


def watch_lag(group: str, read: Callable[[], list[tuple[str, int, int]]]) -> None:
    """Report group ``group``'s lag as ``read`` gives it at scrape time: (topic, partition,
    lag) per partition this process consumes (the sink worker's own consumer)."""
    CONSUMER_LAG.readers[group] = read


# --- tables (agents.state.table) and the HTTP lookups' cache (agents.outbound.cache) ---------
TABLE_RECORDS = Counter(
    "hookstream_table_records_total",
    "Records of a lookup table's topic read, by outcome: upsert, tombstone (key deleted), "
    "invalid (no key, or a value that is not JSON: skipped).",
    ["topic", "outcome"],
)
TABLE_ENTRIES = Gauge("hookstream_table_entries", "Keys a lookup table holds.", ["topic"])
TABLE_LOAD_SECONDS = Gauge(
    "hookstream_table_load_seconds",
    "How long the worker took to read the table's topic to its end at start (set once loaded; "
    "the worker's agents start after it).",
    ["topic"],
)
LOOKUP_CACHE = Counter(
    "hookstream_lookup_cache_total",
    "HTTP lookups with a cache, by result: hit (answered from memory), miss (called).",
    ["flow", "lookup", "result"],
)
