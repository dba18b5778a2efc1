"""The worker runs on uvloop (streams/cli/loops.py, issue 16): it says so at start, answers
events on it, and a SIGTERM still stops it cleanly (mode installs its signal handlers on the
loop: on uvloop as on asyncio's). What crosses loops — the release handed over from Faust's
consumer thread at a rebalance — is test_rebalance.py's and test_ai_outage_release.py's."""

from __future__ import annotations

import signal
from pathlib import Path

from schemas.events import AIResult
from tests.support.ai_stack import enriched, produce, write_config
from tests.support.kafka import Record, wait_for_records
from tests.support.stack import running_stack


async def test_the_worker_runs_on_uvloop_and_stops_on_sigterm(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with running_stack(
        kafka_bootstrap, tmp_path, config_path=write_config(tmp_path), roles=("worker",)
    ) as stack:
        worker = stack.procs["worker"]
        assert "worker: event loop uvloop" in worker.log_text()
        records = [enriched(f"cus-{i % 5}", f"Loop check {i}.") for i in range(20)]
        ids = {r.event.id for r in records}
        await produce(stack.bootstrap, stack.topic("enriched"), records)

        def all_answered(found: list[Record]) -> bool:
            answered = {AIResult.model_validate(r.json()).event.id for r in found}
            return answered >= ids

        await wait_for_records(stack.bootstrap, stack.topic("results"), all_answered)
        assert await worker.stop(signal.SIGTERM) == 0, worker.log_text()[-3000:]
