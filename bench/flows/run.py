"""Benchmark: the AI stage's drain rate for a flow with one AI call (the baseline), with two
steps, and with no AI step, measured in the same run on the same broker.

The AI simulator answers in L = 100 ms (±20 ms); every AI task has max_concurrency N = 64;
the same backlog of enriched records (random keys over 1,000 keys on 8 partitions) is produced
for each flow before its worker starts, so each measures its steady drain rate: results /
(last result - first result). Per-key order violations are counted on the results topic. What
it shows: whether a second step halves the rate (each event now waits 2 L, but each step has
its own N), and what a flow with no AI step costs (no call: the stage's own work and Kafka).

Writes bench/results/flows.md and bench/results/flows.json.
Usage: python bench/flows/run.py [--events 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from schemas.config import KafkaSettings  # noqa: E402
from streams.kafka.admin import create_topics  # noqa: E402
from tests.support.ai_stack import AI_CONFIG, produce  # noqa: E402
from tests.support.sims import running_ai_sim  # noqa: E402
from tests.support.stack import Proc  # noqa: E402


def _ai_bench() -> Any:
    """bench/ai_stage/run.py, for its backlog, output reader and summary (one copy of them)."""
    spec = importlib.util.spec_from_file_location("ai_stage_bench", ROOT / "bench/ai_stage/run.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("bench/ai_stage/run.py is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AI = _ai_bench()
N = AI.N
OUTPUT = {
    "type": "object",
    "properties": {"sentiment": {"type": "string"}, "summary": {"type": "string"}},
    "required": ["sentiment", "summary"],
}


def flow_config(workdir: Path, kind: str) -> Path:
    """AI_CONFIG with its flow ``triage`` as one call (ai), two steps, or no AI step."""
    data = yaml.safe_load(AI_CONFIG)
    ai = {**data["flows"][0]["ai"], "max_concurrency": N, "fallbacks": []}
    flow = data["flows"][0]
    del flow["ai"]
    if kind == "one_call":
        flow["ai"] = ai
    elif kind == "two_steps":
        second = {**ai, "prompt": "Reply to: {{ steps.classify.summary }}", "output": OUTPUT}
        flow["steps"] = [{**ai, "name": "classify"}, {**second, "name": "reply"}]
    else:
        flow["output"] = {"customer": "{{ data.customer_id }}", "text": "{{ data.message }}"}
    path = workdir / f"flows-{kind}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def drain(bootstrap: str, base_url: str, workdir: Path, kind: str, events: int) -> Any:
    prefix = f"fl{uuid.uuid4().hex[:8]}"
    roles = ("events", "enriched", "results", "dlq", "receipts")
    await create_topics(
        KafkaSettings(bootstrap_servers=bootstrap),
        {f"{prefix}.{r}": {} for r in roles},
        partitions=AI.PARTITIONS,
    )
    await produce(bootstrap, f"{prefix}.enriched", AI.backlog(prefix, events))
    env = AI.env_for(bootstrap, prefix, base_url, workdir)
    config = flow_config(workdir, kind)
    worker = Proc(
        "worker", ["worker", "-c", str(config), "-l", "info"], env, workdir / f"worker-{kind}.log"
    )
    await worker.start(ready_timeout_s=180)
    try:
        await AI.wait_count(bootstrap, f"{prefix}.results", events, timeout_s=events * 0.2 + 600)
    finally:
        await worker.stop()
    summary = AI.summarise(await AI.read_output(bootstrap, f"{prefix}.results"))
    return summary


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    results: dict[str, Any] = {
        "setup": {
            "latency_ms": 100,
            "jitter_ms": 20,
            "n": N,
            "events": args.events,
            "keys": AI.KEYS,
            "partitions": AI.PARTITIONS,
            "cpus": os.cpu_count(),
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        async with running_ai_sim(latency_ms=100, jitter_ms=20) as ai:
            for kind in ("one_call", "two_steps", "no_ai"):
                before = (await ai.stats())["requests"]
                print(f"{kind} ...", flush=True)
                results[kind] = await drain(bootstrap, ai.base_url, workdir, kind, args.events)
                results[kind]["model_calls"] = (await ai.stats())["requests"] - before
                print(results[kind], flush=True)
    base = results["one_call"]["events_per_s"]
    results["ratios"] = {
        kind: round(results[kind]["events_per_s"] / max(base, 1e-9), 2)
        for kind in ("two_steps", "no_ai")
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "flows.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "flows.md").write_text(render(results))
    print((out / "flows.md").read_text())
    return 0


def render(r: dict[str, Any]) -> str:
    s, ratios = r["setup"], r["ratios"]
    names = {
        "one_call": "one AI call (ai:), the baseline",
        "two_steps": "two AI steps (steps:)",
        "no_ai": "no AI step (output:)",
    }
    lines = [
        "# Flow kinds benchmark",
        "",
        f"AI simulator latency {s['latency_ms']} ms ± {s['jitter_ms']} ms; N = {s['n']} per AI "
        f"task; {s['events']:,} enriched events over {s['keys']:,} keys on {s['partitions']} "
        f"partitions per flow; one broker, {s['cpus']} CPUs shared with the simulator and "
        "Kafka. Produced by `python bench/flows/run.py` (with KAFKA_BOOTSTRAP_SERVERS set).",
        "",
        "| flow | events | model calls | seconds | results/s | vs one call | order violations |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, name in names.items():
        v = r[kind]
        ratio = "1.00" if kind == "one_call" else f"{ratios[kind]:.2f}"
        lines.append(
            f"| {name} | {v['events']:,} | {v['model_calls']:,} | {v['seconds']} "
            f"| {v['events_per_s']} | {ratio}x | {v['order_violations']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
