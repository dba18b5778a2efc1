"""The gateway's Prometheus metrics (its ``/metrics``: :mod:`streams.metrics.exposition`).

Label values are bounded: ``source`` is a configured source name or ``_unknown`` (never the
path a stranger typed), ``status`` an HTTP status, ``reason`` a refusal code from the fixed set
of :data:`streams.gateway.openapi.PROBLEM_CODES` (docs/reference/problems.md).
"""

from __future__ import annotations

from prometheus_client import Gauge

from streams.metrics.event_loop import LoopCounter, LoopHistogram

UNKNOWN_SOURCE = "_unknown"

# Updated on every webhook from the event loop's thread: lock-free (streams.metrics.event_loop).
REQUESTS = LoopCounter(
    "hookstream_gateway_requests",
    "Webhook requests answered, by source and HTTP status.",
    ("source", "status"),
)
REFUSALS = LoopCounter(
    "hookstream_gateway_refusals",
    "Webhook requests refused, by source and reason (the problem+json code).",
    ("source", "reason"),
)
PRODUCE_SECONDS = LoopHistogram(
    "hookstream_gateway_produce_seconds",
    "Time from handing an event to the producer until Kafka acknowledged it (acks=all).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT_WRITES = Gauge(
    "hookstream_gateway_in_flight_writes",
    "Kafka writes waiting for their acknowledgement.",
)
_STATUS_TEXT = {status: str(status) for status in range(100, 600)}


def count_request(source: str, status: int) -> None:
    REQUESTS.inc((source, _STATUS_TEXT[status]))


def count_refusal(source: str, reason: str) -> None:
    REFUSALS.inc((source, reason))
