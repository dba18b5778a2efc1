"""The gateway's Prometheus metrics (served at its ``/metrics`` by :mod:`streams.metrics`).

Label values are bounded: ``source`` is a configured source name or ``_unknown`` (never the
path a stranger typed), ``status`` an HTTP status, ``reason`` a refusal code from the fixed set
the README lists. Label children are cached, since ``labels()`` costs a lock and a dict lookup
on every request.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UNKNOWN_SOURCE = "_unknown"

REQUESTS = Counter(
    "hookstream_gateway_requests",
    "Webhook requests answered, by source and HTTP status.",
    ("source", "status"),
)
REFUSALS = Counter(
    "hookstream_gateway_refusals",
    "Webhook requests refused, by source and reason (the problem+json code).",
    ("source", "reason"),
)
PRODUCE_SECONDS = Histogram(
    "hookstream_gateway_produce_seconds",
    "Time from handing an event to the producer until Kafka acknowledged it (acks=all).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT_WRITES = Gauge(
    "hookstream_gateway_in_flight_writes",
    "Kafka writes waiting for their acknowledgement.",
)

_requests: dict[tuple[str, int], Counter] = {}
_refusals: dict[tuple[str, str], Counter] = {}


def count_request(source: str, status: int) -> None:
    child = _requests.get((source, status))
    if child is None:
        child = _requests[(source, status)] = REQUESTS.labels(source, str(status))
    child.inc()


def count_refusal(source: str, reason: str) -> None:
    child = _refusals.get((source, reason))
    if child is None:
        child = _refusals[(source, reason)] = REFUSALS.labels(source, reason)
    child.inc()
