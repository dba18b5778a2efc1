"""Dollars for a 10,000-event replay through the batch APIs against the synchronous path.

One AI simulator, one worker, one flow (``triage`` of ``tests/support/ai_stack.py``, its
answer cache off so every event is a paid request in both paths). E enriched events, each with
its own message, are written to the enriched topic; the worker answers them one call at a time
(the synchronous path) and its results' ``cost_usd`` are summed. Then ``hookstream replay
--batch`` answers the same window through the OpenAI Batch API of the simulator, and the
replayed results' ``cost_usd`` (marked ``hookstream-replay``) are summed. Both are the price
table's dollars for the tokens each answer reports; the ratio is the batch discount actually
recorded, with the prompts as the AI stage renders them in both.

Also recorded: the simulator's count of synchronous calls, of batch jobs, submitted lines and
paid lines, and the batch replay's wall time (simulated job latency 1 s). Then the same window
is replayed again under another replay id, killed -9 once its job is on the journal, and run
again: the jobs, lines and paid lines the simulator saw for it (extra paid requests per
10,000 events: target 0).

Writes bench/results/replay_batch.json and bench/results/replay_batch.md.
Usage: python bench/replay_batch/run.py [--events 10000]
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from schemas.headers import REPLAY_HEADER  # noqa: E402
from tests.support.ai_stack import AI_CONFIG, enriched, produce  # noqa: E402
from tests.support.kafka import Record, read_all, wait_for_records  # noqa: E402
from tests.support.sinkstack import run_cli  # noqa: E402
from tests.support.stack import running_stack  # noqa: E402

N = 16
JOB_LATENCY_S = 1.0


def _split(records: list[Record]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    sync, batch = [], []
    for record in records:
        replayed = REPLAY_HEADER in record.headers
        (batch if replayed else sync).append(record.json())
    return sync, batch


async def one_run(bootstrap: str, events: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = workdir / "ai-flows.yaml"
        config.write_text(
            AI_CONFIG.replace(
                "      max_attempts: 3\n", "      max_attempts: 3\n      cache: false\n"
            )
        )
        async with running_stack(
            bootstrap,
            workdir,
            config_path=config,
            roles=("worker",),
            extra_env={"HOOKSTREAM_TEST_N": str(N), "HOOKSTREAM_TEST_PARTITIONS": "8"},
        ) as stack:
            await stack.ai.request_json(
                "POST", "/_sim/batch/config", json={"latency_s": JOB_LATENCY_S}
            )
            run = uuid.uuid4().hex[:6]
            records = [
                enriched(f"cus-{i % 500}", f"Replay {run} #{i}: the invoice page fails.")
                for i in range(events)
            ]
            await produce(stack.bootstrap, stack.topic("enriched"), records)
            results = stack.topic("results")

            def synced(found: list[Record]) -> bool:
                return len(_split(found)[0]) >= events

            await wait_for_records(stack.bootstrap, results, synced, timeout_s=1200)
            env = {**stack.env}
            started = time.monotonic()
            code, out, err = await run_cli(
                "replay", "-c", str(config), "--topic", "enriched", "--from", "0", "--yes",
                "--no-progress", "--batch", "--poll-s", "0.5", env=env,
            )  # fmt: skip
            batch_s = time.monotonic() - started
            if code != 0:
                raise RuntimeError(f"replay --batch failed ({code}): {err}")

            def replayed(found: list[Record]) -> bool:
                return len(_split(found)[1]) >= events

            await wait_for_records(stack.bootstrap, results, replayed, timeout_s=120)
            sync, batch = _split(await read_all(stack.bootstrap, results))
            sim = await stack.ai.stats()
            batch_sim = await stack.ai.request_json("GET", "/_sim/batch/stats")
            killed = await kill_and_resume(stack, config, events)
            sync_usd = sum(r["cost_usd"] for r in sync)
            batch_usd = sum(r["cost_usd"] for r in batch)
            return {
                "events": events,
                "sync_results": len(sync),
                "batch_results": len(batch),
                "sync_cost_usd": round(sync_usd, 6),
                "batch_cost_usd": round(batch_usd, 6),
                "ratio": round(batch_usd / sync_usd, 4) if sync_usd else None,
                "sync_tokens": sum(r["usage"]["total_tokens"] for r in sync),
                "batch_tokens": sum(r["usage"]["total_tokens"] for r in batch),
                "sim_sync_calls": sim["requests"],
                "sim_batch_jobs": batch_sim["jobs_submitted"],
                "sim_batch_lines": batch_sim["lines_submitted"],
                "sim_batch_paid": batch_sim["paid_requests"],
                "custom_ids_submitted_twice": len(batch_sim["custom_ids_submitted_twice"]),
                "batch_replay_s": round(batch_s, 2),
                "job_latency_s": JOB_LATENCY_S,
                "cli_summary": out.strip(),
                "kill_resume": killed,
            }


async def kill_and_resume(stack: Any, config: Path, events: int) -> dict[str, Any]:
    """The same window again under another replay id, killed -9 once its job is journaled,
    then run again: the simulator's lines and paid lines for it, and the results written."""
    ai = stack.ai
    before = await ai.request_json("GET", "/_sim/batch/stats")
    await ai.request_json("POST", "/_sim/batch/config", json={"latency_s": 3600.0})
    args = [
        "-m", "streams.cli.main", "replay", "-c", str(config), "--topic", "enriched",
        "--from", "0", "--yes", "--no-progress", "--batch", "--poll-s", "0.5",
        "--batch-id", f"bench-kill-{uuid.uuid4().hex[:6]}",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, env=stack.env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    journal = f"{stack.prefix}.replay-jobs"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 600
    while loop.time() < deadline:
        try:
            notes = [r.json() for r in await read_all(stack.bootstrap, journal)]
        except Exception:  # noqa: BLE001 - not created yet
            notes = []
        if any(n["kind"] == "job" and n["replay"] == args[-1] for n in notes):
            break
        await asyncio.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    await ai.request_json("POST", "/_sim/batch/config", json={"latency_s": JOB_LATENCY_S})
    code, out, err = await run_cli(*args[2:], env=stack.env)
    if code != 0:
        raise RuntimeError(f"resumed replay --batch failed ({code}): {err}")
    after = await ai.request_json("GET", "/_sim/batch/stats")
    replayed = [
        r
        for r in await read_all(stack.bootstrap, stack.topic("results"))
        if r.headers.get(REPLAY_HEADER) == args[-1].encode()
    ]

    def delta(name: str) -> int:
        return sum(after[name].values()) - sum(before[name].values())

    return {
        "jobs_submitted": delta("jobs_submitted"),
        "lines_submitted": delta("lines_submitted"),
        "paid": delta("paid_requests"),
        "extra_paid_per_10k": round((delta("paid_requests") - events) * 10_000 / events, 1),
        "results": len(replayed),
        "cli_summary": out.strip(),
    }


def write_results(run: dict[str, Any]) -> None:
    out = ROOT / "bench" / "results"
    k = run["kill_resume"]
    (out / "replay_batch.json").write_text(json.dumps(run, indent=2) + "\n")
    lines = [
        "# Dollars of a replay through the batch APIs against the synchronous path",
        "",
        "`python bench/replay_batch/run.py`: one worker (N = 16) answers E enriched events "
        "one call at a time, then `hookstream replay --batch` answers the same window through "
        "the AI simulator's OpenAI Batch API; sums of the results' `cost_usd` (price table: "
        "$150 / $600 per million prompt / completion tokens, `batch_price_factor` 0.5 by "
        "default). Answer cache off, so every event is paid in both paths.",
        "",
        "| events | synchronous $ | batch $ | batch / sync | tokens sync / batch "
        "| sim: sync calls | sim: batch jobs, lines, paid | replay --batch wall time |",
        "|---|---|---|---|---|---|---|---|",
        f"| {run['events']:,} | {run['sync_cost_usd']:.4f} | {run['batch_cost_usd']:.4f} "
        f"| {run['ratio']} | {run['sync_tokens']:,} / {run['batch_tokens']:,} "
        f"| {run['sim_sync_calls']:,} | {sum(run['sim_batch_jobs'].values())}, "
        f"{sum(run['sim_batch_lines'].values()):,}, {sum(run['sim_batch_paid'].values()):,} "
        f"| {run['batch_replay_s']} s (job latency "
        f"{run['job_latency_s']} s) |",
        "",
        f"Requests submitted twice: {run['custom_ids_submitted_twice']}.",
        "",
        "Killed -9 once its job was journaled, then run again (another replay id, the same "
        "window):",
        "",
        "| events | jobs submitted | lines submitted | paid lines | extra paid per 10,000 "
        "| results |",
        "|---|---|---|---|---|---|",
        f"| {run['events']:,} | {k['jobs_submitted']} | {k['lines_submitted']:,} | {k['paid']:,} "
        f"| {k['extra_paid_per_10k']} | {k['results']:,} |",
    ]
    (out / "replay_batch.md").write_text("\n".join(lines) + "\n")


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
