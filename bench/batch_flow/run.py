"""Dollars of a flow with ``ai.mode: batch`` against the same flow synchronous, in one run.

One AI simulator, one worker (N = 16, 8 partitions), two flows with the same prompt and
schema (``triage`` of ``tests/support/ai_stack.py``, and ``triage-batch``, its copy with
``mode: batch``), the answer cache off so every event is paid. E enriched events of each flow
(the same messages, over 500 customers) are written to the enriched topic. The worker answers
``triage`` one call at a time and queues ``triage-batch`` on ``<prefix>.ai-batch``; once all
are queued, ``hookstream batcher`` starts, is killed -9 as soon as its job is journaled (the
simulated job then takes an hour), and is started again (job latency 1 s). Recorded: both
flows' summed ``cost_usd`` and their ratio, the simulator's synchronous calls, batch jobs,
submitted and paid lines, lines submitted twice, extra paid lines per 10,000 events, per-key
order of both flows' results against the order written, the worker's time to queue E batch
events, and the restarted batcher's time to its last result.

Writes bench/results/batch_flow.json and bench/results/batch_flow.md.
Usage: python bench/batch_flow/run.py [--events 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.ai_stack import AI_CONFIG, enriched, produce  # noqa: E402
from tests.support.kafka import Record, read_all, wait_for_records  # noqa: E402
from tests.support.stack import running_stack  # noqa: E402

N = 16
JOB_LATENCY_S = 1.0
BATCH_FLOW = "triage-batch"


def _config() -> str:
    text = AI_CONFIG.replace(
        "      max_attempts: 3\n", "      max_attempts: 3\n      cache: false\n"
    ).replace(
        "  commit_interval_s: 0.5\n",
        "  commit_interval_s: 0.5\n  batch: {max_wait_s: 2, max_requests: 50000, poll_s: 0.5}\n",
    )
    flow = text[text.index("  - name: triage\n") :]
    batch = flow.replace("name: triage", f"name: {BATCH_FLOW}").replace(
        "      cache: false\n", "      cache: false\n      mode: batch\n"
    )
    return text + batch


def _by_flow(records: list[Record]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        value = record.json()
        found[value["flow"]].append(value)
    return found


def _in_key_order(results: list[dict[str, Any]], sent: dict[str, list[str]]) -> bool:
    written: dict[str, list[str]] = defaultdict(list)
    for value in results:
        written[value["event"]["partitionkey"]].append(value["event"]["id"])
    return dict(written) == dict(sent)


class BatcherProc:
    def __init__(self, env: dict[str, str], config: Path, log_path: Path) -> None:
        self.env, self.config, self.log_path = env, config, log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "streams.cli.main", "batcher", "-c", str(self.config),
                "-l", "info", cwd=ROOT, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file, stderr=log_file,
            )  # fmt: skip

    async def signal(self, sig: int) -> int:
        assert self.process is not None
        os.kill(self.process.pid, sig)
        return await self.process.wait()


async def one_run(bootstrap: str, events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = workdir / "ai-flows.yaml"
        config.write_text(_config())
        async with running_stack(
            bootstrap,
            workdir,
            config_path=config,
            roles=("worker",),
            extra_env={"HOOKSTREAM_TEST_N": str(N), "HOOKSTREAM_TEST_PARTITIONS": "8"},
        ) as stack:
            run = uuid.uuid4().hex[:6]
            records = []
            sent: dict[str, dict[str, list[str]]] = {
                "triage": defaultdict(list),
                BATCH_FLOW: defaultdict(list),
            }
            for i in range(events):
                customer = f"cus-{i % 500}"
                for flow in ("triage", BATCH_FLOW):
                    record = enriched(customer, f"Flow {run} #{i}: the invoice page fails.")
                    record = record.model_copy(update={"flow": flow})
                    records.append(record)
                    sent[flow][customer].append(record.event.id)
            await stack.ai.request_json("POST", "/_sim/batch/config", json={"latency_s": 3600.0})
            produced = time.monotonic()
            await produce(stack.bootstrap, stack.topic("enriched"), records)
            queue = stack.topic("ai-batch")
            await wait_for_records(
                stack.bootstrap, queue, lambda r: len(r) >= events, timeout_s=1200
            )
            queued_s = time.monotonic() - produced
            results = stack.topic("results")

            def synced(found: list[Record]) -> bool:
                return len(_by_flow(found)["triage"]) >= events

            await wait_for_records(stack.bootstrap, results, synced, timeout_s=1200)
            batcher = BatcherProc(stack.env, config, workdir / "batcher.log")
            await batcher.start()
            journal = stack.topic("ai-batch-jobs")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 600
            while loop.time() < deadline:
                try:
                    notes = [r.json() for r in await read_all(stack.bootstrap, journal)]
                except Exception:  # noqa: BLE001 - not created yet
                    notes = []
                if any(n["kind"] == "job" for n in notes):
                    break
                await asyncio.sleep(0.2)
            killed = await batcher.signal(signal.SIGKILL)
            await stack.ai.request_json(
                "POST", "/_sim/batch/config", json={"latency_s": JOB_LATENCY_S}
            )
            restarted = time.monotonic()
            await batcher.start()

            def answered(found: list[Record]) -> bool:
                return len(_by_flow(found)[BATCH_FLOW]) >= events

            await wait_for_records(stack.bootstrap, results, answered, timeout_s=1200)
            batch_s = time.monotonic() - restarted
            stopped = await batcher.signal(signal.SIGTERM)
            by_flow = _by_flow(await read_all(stack.bootstrap, results))
            sim = await stack.ai.stats()
            batch_sim = await stack.ai.request_json("GET", "/_sim/batch/stats")
            sync_usd = sum(r["cost_usd"] for r in by_flow["triage"])
            batch_usd = sum(r["cost_usd"] for r in by_flow[BATCH_FLOW])
            paid = sum(batch_sim["paid_requests"].values())
            return {
                "events_per_flow": events,
                "sync_results": len(by_flow["triage"]),
                "batch_results": len(by_flow[BATCH_FLOW]),
                "sync_cost_usd": round(sync_usd, 6),
                "batch_cost_usd": round(batch_usd, 6),
                "ratio": round(batch_usd / sync_usd, 4) if sync_usd else None,
                "sync_tokens": sum(r["usage"]["total_tokens"] for r in by_flow["triage"]),
                "batch_tokens": sum(r["usage"]["total_tokens"] for r in by_flow[BATCH_FLOW]),
                "sim_sync_calls": sim["requests"],
                "sim_batch_jobs": sum(batch_sim["jobs_submitted"].values()),
                "sim_batch_lines": sum(batch_sim["lines_submitted"].values()),
                "sim_batch_paid": paid,
                "custom_ids_submitted_twice": len(batch_sim["custom_ids_submitted_twice"]),
                "extra_paid_per_10k": round((paid - events) * 10_000 / events, 1),
                "sync_in_key_order": _in_key_order(by_flow["triage"], sent["triage"]),
                "batch_in_key_order": _in_key_order(by_flow[BATCH_FLOW], sent[BATCH_FLOW]),
                "worker_queue_s": round(queued_s, 2),
                "batcher_restart_to_last_result_s": round(batch_s, 2),
                "job_latency_s": JOB_LATENCY_S,
                "batcher_exit_killed": killed,
                "batcher_exit_sigterm": stopped,
            }


def write_results(run: dict[str, Any]) -> None:
    out = ROOT / "bench" / "results"
    (out / "batch_flow.json").write_text(json.dumps(run, indent=2) + "\n")
    lines = [
        "# Dollars of a flow with ai.mode: batch against the same flow synchronous",
        "",
        "`python bench/batch_flow/run.py`: one worker (N = 16, 8 partitions), two flows with "
        "the same prompt (`triage`, synchronous; `triage-batch`, `mode: batch`), E enriched "
        "events each, answer cache off; `hookstream batcher` started once all batch events "
        "are queued, killed -9 once its job is journaled, started again. Sums of the results' "
        "`cost_usd` (price table: $150 / $600 per million prompt / completion tokens, "
        "`batch_price_factor` 0.5 by default).",
        "",
        "| events per flow | synchronous $ | batch $ | batch / sync | tokens sync / batch "
        "| sim: sync calls | sim: batch jobs, lines, paid | submitted twice "
        "| extra paid per 10,000 | per-key order sync / batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {run['events_per_flow']:,} | {run['sync_cost_usd']:.4f} "
        f"| {run['batch_cost_usd']:.4f} | {run['ratio']} "
        f"| {run['sync_tokens']:,} / {run['batch_tokens']:,} | {run['sim_sync_calls']:,} "
        f"| {run['sim_batch_jobs']}, {run['sim_batch_lines']:,}, {run['sim_batch_paid']:,} "
        f"| {run['custom_ids_submitted_twice']} | {run['extra_paid_per_10k']} "
        f"| {run['sync_in_key_order']} / {run['batch_in_key_order']} |",
        "",
        f"The worker had queued all {run['events_per_flow']:,} batch events "
        f"{run['worker_queue_s']} s after they were written (read interleaved with the "
        "synchronous flow's events, each a model call, on the same topic); the restarted "
        f"batcher wrote its last result {run['batcher_restart_to_last_result_s']} s after it "
        f"started (simulated job latency {run['job_latency_s']} s).",
    ]
    (out / "batch_flow.md").write_text("\n".join(lines) + "\n")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()
    bootstrap = args.bootstrap or os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    run = await one_run(bootstrap, args.events)
    print(json.dumps(run))
    write_results(run)


if __name__ == "__main__":
    asyncio.run(main())
