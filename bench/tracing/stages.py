"""Benchmark: what the trace context and spans cost a stage, per event, in one process.

A stage handler that does nothing is called 100,000 times (in one task, no Kafka), as:

- ``bare``: the undecorated handler (what every stage was before the trace context);
- ``off``: through :func:`agents.stages.base.traced` with spans off, the record carrying a
  ``traceparent`` header (the common case: every record hookstream writes has one);
- ``off, no header``: the same for a record without the header (its trace read from its value:
  a second JSON parse);
- ``on``: spans on, one consumer span per event, ended into the SDK's BatchSpanProcessor whose
  exporter drops them (the cost of the span, not of the network);

and ``carried_headers`` of a record (the headers a stage writes), before (the replay marker only)
and now (with the trace context). Each figure is the best of 5 rounds, in ns per event.
Writes bench/results/tracing_stages.md and .json. Usage: python bench/tracing/stages.py
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from agents.stages.base import Stage, record_trace, traced  # noqa: E402
from schemas import tracecontext  # noqa: E402
from schemas.headers import CARRIED_HEADERS, carried_headers  # noqa: E402
from streams.metrics import tracing  # noqa: E402

EVENTS = 100_000
ROUNDS = 5
RESULTS = ROOT / "bench" / "results"
VALUE = json.dumps(
    {
        "specversion": "1.0",
        "id": "wh-1",
        "source": "helpdesk",
        "type": "ticket.created",
        "traceid": "4bf92f3577b34da6a3ce929d0e0e4736",
        "data": {"customer_id": "cus_1", "message": "The CSV export fails. " * 10},
    }
).encode()
HEADERS = [
    ("content-type", b"application/cloudevents+json"),
    ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
]


@dataclass
class Message:
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "p.events"
    partition: int = 3
    offset: int = 17


@dataclass
class Event:
    message: Message


class Nothing(Stage):
    name = "enrich"

    def __init__(self) -> None:
        pass

    async def bare(self, event: Any) -> None:
        return None

    @traced
    async def handle(self, event: Any) -> None:
        return None


class Drop(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def best_ns(run: Callable[[], float]) -> float:
    return min(run() for _ in range(ROUNDS))


def handler_ns(handle: Callable[[Any], Awaitable[None]], event: Event) -> float:
    async def loop() -> float:
        started = time.perf_counter_ns()
        for _ in range(EVENTS):
            await handle(event)
        return (time.perf_counter_ns() - started) / EVENTS

    return asyncio.run(loop())


def old_carried(message: Message) -> list[tuple[str, bytes]]:
    return [(k, bytes(v)) for k, v in message.headers if k in CARRIED_HEADERS and v is not None]


def call_ns(function: Callable[[Message], Any], message: Message) -> float:
    started = time.perf_counter_ns()
    for _ in range(EVENTS):
        function(message)
    return (time.perf_counter_ns() - started) / EVENTS


def main() -> int:
    stage = Nothing()
    with_header = Event(Message(VALUE, HEADERS))
    without = Event(Message(VALUE, HEADERS[:1]))
    figures = {
        "bare": best_ns(lambda: handler_ns(stage.bare, with_header)),
        "off": best_ns(lambda: handler_ns(stage.handle, with_header)),
        "off, no header": best_ns(lambda: handler_ns(stage.handle, without)),
    }
    # Spans on, the way a service has them (a BatchSpanProcessor), but exported nowhere.
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    tracing._tracer = provider.get_tracer("hookstream")
    try:
        figures["on"] = best_ns(lambda: handler_ns(stage.handle, with_header))
    finally:
        tracing._tracer = None
        provider.shutdown()
    message = with_header.message
    figures["carried_headers before"] = best_ns(lambda: call_ns(old_carried, message))
    # As a stage calls it: the record's context current (streams off: the record's own).
    token = tracecontext.activate(record_trace(message))
    try:
        figures["carried_headers now"] = best_ns(lambda: call_ns(carried_headers, message))
    finally:
        tracecontext.restore(token)
    rounded = {name: round(value) for name, value in figures.items()}
    info = {"python": platform.python_version(), "machine": platform.machine()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "events": EVENTS, "rounds": ROUNDS, "ns_per_event": rounded}
    (RESULTS / "tracing_stages.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Stages: the cost of the trace context and of spans (bench/tracing/stages.py)",
        "",
        f"A handler that does nothing, {EVENTS:,} calls in one task, best of {ROUNDS} rounds; "
        f"Python {info['python']}. `on`: each span ends into a BatchSpanProcessor whose exporter "
        "drops it; at this rate its queue overflows, so the export is not counted.",
        "",
        "| what | ns per event | over bare |",
        "|---|---:|---:|",
    ]
    for name in ("bare", "off", "off, no header", "on"):
        extra = rounded[name] - rounded["bare"]
        lines.append(f"| handler, {name} | {rounded[name]:,} | {extra:+,} |")
    lines.append(f"| carried_headers, before | {rounded['carried_headers before']:,} | |")
    lines.append(f"| carried_headers, now | {rounded['carried_headers now']:,} | |")
    (RESULTS / "tracing_stages.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(rounded, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
