"""Backpressure: a 50,000-event backlog on the enriched topic, a flow bounded to N in flight.

The worker must keep N calls in flight — not more, whatever the backlog — and its memory must
not grow with the backlog. Read from the worker's own /metrics (the runner's live counters and
the process collector's RSS), not from timing.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from agents.stages.ai import ADMIT_PER_CALL
from tests.support.ai_stack import enriched, metric, produce, scrape, write_config
from tests.support.broker import free_port
from tests.support.stack import running_stack

N = 16
BACKLOG = 50_000
MiB = 1024 * 1024


async def test_a_50k_backlog_keeps_in_flight_and_memory_bounded(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    port = free_port()
    async with running_stack(
        kafka_bootstrap,
        tmp_path,
        config_path=write_config(tmp_path),
        roles=("worker",),
        extra_env={"HOOKSTREAM_METRICS_PORT": str(port), "HOOKSTREAM_TEST_N": str(N)},
        ai_knobs={"latency_ms": 50, "jitter_ms": 10},
    ) as stack:
        url = f"http://127.0.0.1:{port}/metrics"
        run = uuid.uuid4().hex[:6]
        records = [enriched(f"cus-{i % 1000}", f"Backlog {run} {i}.") for i in range(BACKLOG)]
        await produce(stack.bootstrap, stack.topic("enriched"), records)
        del records

        async def sample() -> tuple[float, float, float, float, float]:
            samples = await scrape(url)
            return (
                metric(samples, "hookstream_runner_in_flight", agent="hookstream.ai"),
                metric(samples, "hookstream_runner_max_in_flight_seen", agent="hookstream.ai"),
                metric(samples, "hookstream_runner_handled", agent="hookstream.ai"),
                metric(samples, "process_resident_memory_bytes"),
                metric(samples, "hookstream_ai_in_flight", flow="triage"),
            )

        # Warm up: the worker has read into the backlog and runs at its bound.
        for _ in range(600):
            in_flight, seen, handled, rss_start, _ = await sample()
            if handled >= 500:
                break
            await asyncio.sleep(0.1)
        assert handled >= 500
        readings = []
        while handled < 2500:
            in_flight, seen, handled, rss, calls = await sample()
            readings.append((in_flight, seen, rss, calls))
            await asyncio.sleep(0.25)
        # The runner admits up to ADMIT_PER_CALL x N events (those whose key is busy, or
        # whose call is over and whose writes are not yet acked, hold no call slot); the
        # flow's calls stay at N.
        assert max(seen for _, seen, _, _ in readings) <= ADMIT_PER_CALL * N
        assert max(calls for _, _, _, calls in readings) == N  # saturated, never above
        rss_end = readings[-1][2]
        assert all(in_flight <= ADMIT_PER_CALL * N for in_flight, _, _, _ in readings)
        # Tens of thousands of events wait on Kafka, not in the worker.
        assert handled < BACKLOG / 2
        assert rss_end < 400 * MiB, rss_end / MiB
        assert rss_end - rss_start < 64 * MiB, (rss_start / MiB, rss_end / MiB)
        stats = await stack.ai.stats()
        assert stats["max_in_flight"] <= N
