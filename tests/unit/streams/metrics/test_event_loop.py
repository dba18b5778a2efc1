"""The lock-free gateway metrics expose exactly what prometheus_client's own classes would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from streams.metrics.event_loop import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 1.0, 10.0)


def exposition(registry: CollectorRegistry) -> list[str]:
    """The text format without ``_created`` samples (a creation time differs by design)."""
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_histogram_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopHistogram("h_seconds", "A latency.", BUCKETS, registry=ours)
    reference = Histogram("h_seconds", "A latency.", buckets=BUCKETS, registry=theirs)
    # On a bound, between bounds, under the first, above the last.
    for value in (0.0005, 0.001, 0.003, 0.0025, 0.5, 1.0, 9.99, 10.0, 11.0, 250.0):
        loop.observe(value)
        reference.observe(value)
    assert exposition(ours) == exposition(theirs)
    assert 'h_seconds_bucket{le="0.001"} 2.0' in exposition(ours)  # le means "≤"


def test_counter_with_labels_matches_prometheus_client() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopCounter("requests", "Requests.", ("source", "status"), registry=ours)
    reference = Counter("requests", "Requests.", ("source", "status"), registry=theirs)
    for labels in [("a", "202"), ("a", "202"), ("b", "401"), ("a", "503")]:
        loop.inc(labels)
        reference.labels(*labels).inc()
    assert exposition(ours) == exposition(theirs)
    assert 'requests_total{source="a",status="202"} 2.0' in exposition(ours)


def test_histogram_refuses_unordered_buckets() -> None:
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("h", "h", (1.0, 0.5), registry=None)
