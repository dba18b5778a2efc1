"""The worker's Prometheus metrics (served by ``hookstream worker --metrics-port``).

Labels are bounded: agent, flow, provider, model names from the config, outcome and token kind.
Never event ids or payload content.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram


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
