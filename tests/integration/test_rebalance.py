"""A second worker joins mid-load, then leaves mid-load: every event gets exactly one result and
one model call, and per-key order holds.

The case Faust users report most after crashes (faust-streaming #221, #606): a rebalance hands a
partition to another worker while events of it are in flight. Faust waits for every event that
started (``stream_wait_empty``) and commits before it lets the partitions go; the runner acks in
offset order, so that commit is exactly what is done, and the new owner starts after it.
"""

from __future__ import annotations

import hashlib
import signal
import uuid
from collections import Counter, defaultdict
from pathlib import Path

from schemas.events import AIResult, EnrichedEvent
from tests.support.ai_stack import enriched, metric, produce, scrape, write_config
from tests.support.broker import free_port
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.stack import Proc, running_stack

CUSTOMERS = 24


def results_of(records: list[Record], ids: set[str]) -> list[AIResult]:
    found = (AIResult.model_validate(r.json()) for r in records)
    return [r for r in found if r.event.id in ids]


def load(run: str, batch: str, count: int) -> list[EnrichedEvent]:
    return [
        enriched(f"cus-{i % CUSTOMERS}", f"Rebalance {run} {batch} item {i:04d}.")
        for i in range(count)
    ]


async def test_a_worker_joining_then_leaving_mid_load_processes_each_event_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with running_stack(
        kafka_bootstrap,
        tmp_path,
        config_path=write_config(tmp_path),
        roles=("worker",),
        extra_env={"HOOKSTREAM_TEST_N": "8", "HOOKSTREAM_TEST_PARTITIONS": "8"},
        ai_knobs={"latency_ms": 40, "jitter_ms": 30},
    ) as stack:
        first = stack.procs["worker"]
        results = stack.topic("results")
        run = uuid.uuid4().hex[:6]
        joining, leaving = load(run, "a", 500), load(run, "b", 500)
        everything = [*joining, *leaving]
        ids = {r.event.id for r in everything}

        async def results_for(batch: list[EnrichedEvent], at_least: int) -> None:
            wanted = {r.event.id for r in batch}

            def enough(found: list[Record]) -> bool:
                return len({r.event.id for r in results_of(found, wanted)}) >= at_least

            await wait_for_records(stack.bootstrap, results, enough, timeout_s=180, poll_s=0.2)

        await produce(stack.bootstrap, stack.topic("enriched"), joining)
        await results_for(joining, 80)
        # Its own state directory (Faust's datadir), the same group: a rebalance.
        metrics_port = free_port()
        second = Proc(
            name="worker-2",
            args=first.args,
            env={
                **stack.env,
                "HOOKSTREAM_STATE_DIR": str(tmp_path / "state-2"),
                "HOOKSTREAM_METRICS_PORT": str(metrics_port),
            },
            log_path=tmp_path / "worker-2.log",
        )
        await second.start()
        await produce(stack.bootstrap, stack.topic("enriched"), leaving)
        await results_for(leaving, 80)
        # The join really moved partitions: the second worker handled part of the load.
        samples = await scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert metric(samples, "hookstream_runner_handled", agent="hookstream.ai") > 0
        assert await second.stop(signal.SIGTERM) == 0  # leaves gracefully: a rebalance again
        await results_for(everything, len(everything))
        # Sentinels: one more event per customer. Each is behind that customer's events in its
        # partition and runs after them (per-key order), so once every sentinel has its result,
        # whatever the last rebalance made the first worker redo has its result too.
        sentinels = [
            enriched(f"cus-{i}", f"Rebalance {run} sentinel {i}.") for i in range(CUSTOMERS)
        ]
        await produce(stack.bootstrap, stack.topic("enriched"), sentinels)
        await results_for(sentinels, CUSTOMERS)

        found = results_of(await read_all(stack.bootstrap, results), ids)
        counts = Counter(r.event.id for r in found)
        assert set(counts) == ids  # none lost
        assert set(counts.values()) == {1}, counts.most_common(3)  # none twice
        digests = {hashlib.sha256(r.event.data["message"].encode()).hexdigest() for r in everything}
        calls = Counter(
            call["user_text_sha256"]
            for call in (await stack.ai.stats())["calls"]
            if call["user_text_sha256"] in digests
        )
        assert set(calls) == digests
        assert set(calls.values()) == {1}, calls.most_common(3)  # no event paid for twice
        # Per-key order survived both hand-overs.
        by_customer: defaultdict[str, list[str]] = defaultdict(list)
        for result in found:
            by_customer[result.event.partitionkey].append(result.event.data["message"])
        for customer, messages in by_customer.items():
            sent = [r.event.data["message"] for r in everything if r.event.partitionkey == customer]
            assert messages == sent, customer
