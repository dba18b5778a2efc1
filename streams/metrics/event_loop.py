"""Prometheus metrics updated from one event loop: plain integers, no lock per update.

Why: ``prometheus_client``'s Counter and Histogram take a lock on every ``inc``/``observe``
(they may be updated from any thread), ~0.5 µs per counter and ~0.8 µs per histogram
observation. The gateway updates both on every webhook, from its one event-loop thread, and
serves ``/metrics`` from that same thread. These classes keep the counts in plain Python
numbers and hand them to ``prometheus_client`` as metric families when it collects, so the
exposition (names, ``_total``, ``_bucket``/``_sum``/``_count``, label order) is the library's.

Not thread-safe by design: update them only from the thread that runs the event loop.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry


class LoopCounter(Collector):
    """A counter with labels: ``inc(labels)`` adds one to the child of that label tuple."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.counts: dict[tuple[str, ...], int] = {}
        if registry is not None:
            registry.register(self)

    def inc(self, labels: tuple[str, ...]) -> None:
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, count in self.counts.items():
            family.add_metric(list(labels), count)
        yield family


class LoopHistogram(Collector):
    """A histogram without labels; ``buckets`` are the upper bounds, ``+Inf`` is added."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        *,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        if list(buckets) != sorted(buckets):
            raise ValueError("histogram buckets must be in increasing order")
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        if registry is not None:
            registry.register(self)

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le = "≤").
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[Metric]:
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append((_bound_text(bound), running))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self.sum
        )


def _bound_text(bound: float) -> str:
    """The ``le`` label as prometheus_client writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(bound)
