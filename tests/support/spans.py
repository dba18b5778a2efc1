"""Spans kept in memory for a unit test: tracing set up for one service with an in-memory
exporter, and shut down after the test, however it ends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streams.metrics import tracing


@contextlib.contextmanager
def exporting(service: str) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.setup(service, {}, exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()
