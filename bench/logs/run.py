"""Benchmark: what the log context costs an event, and what a JSON line costs when written.

The worker's per-event path gains two context updates (streams.logs): the runner binds the
Kafka record in the event's task, the stage binds the decoded event. This measures, in one
process, without Kafka:

1. the OrderedRunner's handle path (100,000 events over 1,000 keys, a handler that only
   decodes its EnrichedEvent like the AI stage does): events/s with the bindings, and with
   both replaced by no-ops;
2. decode() of one EnrichedEvent alone, with and without its binding (ns per event);
3. one log call per event at a level that is off (the common case: debug lines at info);
4. formatting one line: text, JSON without context, JSON with an event's context (µs).

Each figure is the best of 5 rounds. Writes bench/results/logs.md and bench/results/logs.json.
Usage: python bench/logs/run.py [--events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agents.stages import base as stage_base  # noqa: E402
from agents.stages import runner as runner_module  # noqa: E402
from agents.stages.base import decode  # noqa: E402
from agents.stages.runner import OrderedRunner  # noqa: E402
from schemas.codec import dumps  # noqa: E402
from schemas.events import CloudEvent, EnrichedEvent  # noqa: E402
from streams import logs  # noqa: E402

ROUNDS = 5
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Message:
    tp: TP
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


@dataclass
class Event:
    key: bytes
    message: Message

    def ack(self) -> bool:
        return True


def enriched_value(number: int) -> bytes:
    event = CloudEvent(
        id=f"ev-{number}",
        source="helpdesk",
        type="ticket.created",
        time=datetime.now(UTC),
        data={"customer_id": f"cus-{number % 1000}", "message": "The export is broken."},
        partitionkey=f"cus-{number % 1000}",
        traceid=uuid.uuid4().hex,
    )
    return dumps(EnrichedEvent(flow="triage", event=event))


def make_events(count: int) -> list[Event]:
    values = [enriched_value(n) for n in range(1000)]
    events = []
    for number in range(count):
        partition = number % 8
        key = f"cus-{number % 1000}".encode()
        tp = TP("bench.enriched", partition)
        message = Message(tp, tp.topic, partition, number // 8, key, values[number % 1000])
        events.append(Event(key, message))
    return events


async def handle(event: Event) -> None:
    decode(EnrichedEvent, event.message.value, stage="ai")


async def stream(events: list[Event], runner: OrderedRunner[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event
    await runner.drain()  # the runner cancels what is in flight when its stream ends


async def runner_rate(events: list[Event]) -> float:
    runner: OrderedRunner[Event] = OrderedRunner(handle, max_in_flight=256)
    started = time.perf_counter()
    await runner.run(stream(events, runner))
    elapsed = time.perf_counter() - started
    assert runner.stats.handled == len(events)
    return len(events) / elapsed


def per_call_ns(call: Callable[[], Any], count: int) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter_ns()
        for _ in range(count):
            call()
        best = min(best, (time.perf_counter_ns() - started) / count)
    return best


def without_bindings() -> Callable[[], None]:
    """Replace both bindings, where the runner and decode() call them, by no-ops; returns the
    undo."""
    runner_names, base_names = vars(runner_module), vars(stage_base)
    saved = (runner_names["bind_record"], base_names["bind_event"])
    runner_names["bind_record"] = lambda message: None
    base_names["bind_event"] = lambda stage, event, flow=None: None

    def undo() -> None:
        runner_names["bind_record"], base_names["bind_event"] = saved

    return undo


def measure(count: int) -> dict[str, Any]:
    events = make_events(count)
    with_rates, without_rates = [], []
    for _ in range(ROUNDS):  # alternated, so that a busy moment of the machine hits both
        with_rates.append(asyncio.run(runner_rate(events)))
        undo = without_bindings()
        try:
            without_rates.append(asyncio.run(runner_rate(events)))
        finally:
            undo()
    with_rate, without_rate = max(with_rates), max(without_rates)

    value = events[0].message.value
    decode_with = per_call_ns(lambda: decode(EnrichedEvent, value, stage="ai"), 20_000)
    undo = without_bindings()
    try:
        decode_without = per_call_ns(lambda: decode(EnrichedEvent, value, stage="ai"), 20_000)
    finally:
        undo()

    off = logging.getLogger("bench.off")
    off.setLevel(logging.INFO)
    debug_off_ns = per_call_ns(lambda: off.debug("handled %s", "ev-1"), 200_000)

    record = logging.LogRecord(
        "agents.emit", logging.WARNING, __file__, 1, "dead-lettering %s at %s", ("x", "ai"), None
    )
    text = logs.formatter("text", "worker")
    json_formatter = logs.formatter("json", "worker")
    text_us = per_call_ns(lambda: text.format(record), 20_000) / 1000
    json_us = per_call_ns(lambda: json_formatter.format(record), 20_000) / 1000
    decoded = decode(EnrichedEvent, value, stage="ai")

    async def in_context() -> float:
        logs.bind_record(events[0].message)
        logs.bind_event("ai", decoded.event, decoded.flow)
        return per_call_ns(lambda: json_formatter.format(record), 20_000) / 1000

    json_context_us = asyncio.run(in_context())
    return {
        "events": count,
        "runner_events_per_s_with_context": round(with_rate),
        "runner_events_per_s_without": round(without_rate),
        "runner_cost_pct": round(100 * (without_rate - with_rate) / without_rate, 1),
        "runner_cost_us_per_event": round(1e6 / with_rate - 1e6 / without_rate, 2),
        "decode_ns_with_binding": round(decode_with),
        "decode_ns_without": round(decode_without),
        "debug_call_at_info_ns": round(debug_off_ns),
        "format_text_us": round(text_us, 2),
        "format_json_us": round(json_us, 2),
        "format_json_with_event_us": round(json_context_us, 2),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def write(results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "logs.json").write_text(json.dumps(results, indent=2) + "\n")
    r = results
    lines = [
        "# Log context and JSON lines (bench/logs/run.py)",
        "",
        f"Python {r['python']} on {r['machine']}; best of {ROUNDS} rounds; no Kafka (the "
        "runner over in-memory events, a handler that decodes an EnrichedEvent).",
        "",
        "| measure | figure |",
        "|---|---|",
        f"| runner, {r['events']:,} events, with the context | "
        f"{r['runner_events_per_s_with_context']:,} events/s |",
        f"| runner, the same, bindings replaced by no-ops | "
        f"{r['runner_events_per_s_without']:,} events/s |",
        f"| cost of the context | {r['runner_cost_pct']} % "
        f"({r['runner_cost_us_per_event']} µs per event) |",
        f"| decode(EnrichedEvent) with its binding | {r['decode_ns_with_binding']:,} ns |",
        f"| decode(EnrichedEvent) without | {r['decode_ns_without']:,} ns |",
        f"| a debug call at level info (not formatted) | {r['debug_call_at_info_ns']} ns |",
        f"| format one line: text | {r['format_text_us']} µs |",
        f"| format one line: JSON, no event | {r['format_json_us']} µs |",
        f"| format one line: JSON with an event's ids | {r['format_json_with_event_us']} µs |",
        "",
    ]
    (RESULTS / "logs.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    results = measure(args.events)
    write(results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
