"""A worker killed with SIGKILL mid-load and restarted: exactly one result per event, none lost,
and what it remembered (answer cache, dedupe) survives the restart.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from pathlib import Path

from schemas.events import AIResult
from tests.support.ai_stack import enriched, produce, write_config
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.stack import running_stack


def result_ids(records: list[Record], ids: set[str]) -> Counter[str]:
    found = (AIResult.model_validate(r.json()) for r in records)
    return Counter(r.event.id for r in found if r.event.id in ids)


async def test_sigkill_mid_load_then_restart_gives_exactly_one_result_per_event(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with running_stack(
        kafka_bootstrap,
        tmp_path,
        # 6 s sessions: the restarted worker joins once its killed self's expired.
        config_path=write_config(tmp_path, session_timeout_s=6),
        roles=("worker",),
        extra_env={"HOOKSTREAM_TEST_N": "16"},
        ai_knobs={"latency_ms": 30, "jitter_ms": 20},
    ) as stack:
        worker = stack.procs["worker"]
        results = stack.topic("results")
        run = uuid.uuid4().hex[:6]
        cached_text = f"Remember me {run}: the new invoices are great."
        first = enriched("cus-cache", cached_text)
        records = [enriched(f"cus-{i % 40}", f"Load {run} item {i}.") for i in range(800)]
        ids = {r.event.id for r in records}
        await produce(stack.bootstrap, stack.topic("enriched"), [first, *records])

        def some(found: list[Record]) -> bool:
            return sum(result_ids(found, ids).values()) >= 150

        await wait_for_records(stack.bootstrap, results, some, timeout_s=120, poll_s=0.2)
        assert await worker.stop(signal.SIGKILL) == -signal.SIGKILL
        done_before = sum(result_ids(await read_all(stack.bootstrap, results), ids).values())
        assert done_before < len(ids)  # killed mid-load, not after
        await worker.start()

        def all_done(found: list[Record]) -> bool:
            return set(result_ids(found, ids)) >= ids

        await wait_for_records(stack.bootstrap, results, all_done, timeout_s=180)
        # Sentinels: one more event per customer, behind that customer's events in its
        # partition and run after them (per-key order). Once each has its result, whatever the
        # restarted worker redoes has its result too: then count.
        sentinels = [enriched(f"cus-{i}", f"Load {run} sentinel {i}.") for i in range(40)]
        sentinel_ids = {r.event.id for r in sentinels}
        await produce(stack.bootstrap, stack.topic("enriched"), sentinels)

        def sentinels_done(found: list[Record]) -> bool:
            return set(result_ids(found, sentinel_ids)) >= sentinel_ids

        await wait_for_records(stack.bootstrap, results, sentinels_done, timeout_s=120)
        counts = result_ids(await read_all(stack.bootstrap, results), ids)
        assert set(counts) == ids  # none lost
        assert {n for n in counts.values()} == {1}, counts.most_common(3)  # none twice
        assert "recovery:" in worker.log_text()

        # The answer cache and the dedupe memory came back with the restarted worker.
        calls_before = len(await stack.ai.calls_for(cached_text))
        again = enriched("cus-cache-2", cached_text)
        await produce(stack.bootstrap, stack.topic("enriched"), [again, first])

        def answered(found: list[Record]) -> bool:
            return again.event.id in result_ids(found, {again.event.id})

        found = await wait_for_records(stack.bootstrap, results, answered, timeout_s=60)
        by_id = [AIResult.model_validate(r.json()) for r in found]
        [hit] = [r for r in by_id if r.event.id == again.event.id]
        assert hit.cached
        assert len(await stack.ai.calls_for(cached_text)) == calls_before == 1
        # `first` was produced again after its result: skipped as a duplicate (after `again`,
        # same partition order is not guaranteed, so wait for the worker to log it).
        for _ in range(300):
            if "its result is already on Kafka" in worker.log_text():
                break
            await asyncio.sleep(0.2)
        assert "its result is already on Kafka" in worker.log_text()
        counts = result_ids(await read_all(stack.bootstrap, results), {first.event.id})
        assert counts[first.event.id] == 1
