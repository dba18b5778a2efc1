"""Benchmark: hookstream's AI stage vs a naive Faust agent vs Faust ``concurrency=64``.

The AI simulator answers in L = 100 ms (±20 ms); the flow has N = 64; 20,000 events over 1,000
keys on 8 partitions are produced to an enriched topic before each consumer starts, so each
measures its steady drain rate: events / (last output - first output). Per-key order
violations are counted on each output topic (a key's sequence numbers must rise). The naive
agent does one call at a time (≈ 1/L events/s); it is measured on a smaller slice, which is
enough for a rate. Finally the worker's RSS is read from its /metrics with 1,000 events in
flight (N = 250: the runner admits 4N = 1,000, agents.stages.ai.ADMIT_PER_CALL; L = 2 s).

Writes bench/results/ai_stage.md and bench/results/ai_stage.json.
Usage: python bench/ai_stage/run.py [--events 20000] [--naive-events 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from schemas.config import KafkaSettings  # noqa: E402
from streams.kafka.admin import create_topics  # noqa: E402
from tests.support.ai_stack import enriched, metric, produce, scrape, write_config  # noqa: E402
from tests.support.sims import running_ai_sim  # noqa: E402
from tests.support.stack import SECRETS, Proc  # noqa: E402

L_S, N, KEYS, PARTITIONS = 0.1, 64, 1000, 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def backlog(run: str, events: int) -> list[Any]:
    seq: dict[str, int] = defaultdict(int)
    records = []
    rng = random.Random(events)  # noqa: S311 - a benchmark's key sequence, not crypto
    for _ in range(events):
        # Random keys: a key's events come close together, so same-key events can be in
        # flight at once (round-robin keys would hide reordering).
        key = f"cus-{rng.randrange(KEYS)}"
        seq[key] += 1
        records.append(enriched(key, f"Bench {run} {key} {seq[key]}."))
    return records


async def read_output(bootstrap: str, topic: str) -> list[tuple[int, str, int]]:
    """(timestamp ms, key, seq) of every record, per partition in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        rows: list[tuple[int, str, int]] = []
        left = {tp for tp in tps if ends[tp] > 0}
        while left:
            batch = await consumer.getmany(*left, timeout_ms=1000)
            for tp, messages in batch.items():
                for m in messages:
                    value = orjson.loads(m.value)
                    if "seq" in value:
                        rows.append((m.timestamp, value["key"], value["seq"]))
                    else:
                        data = value["event"]["data"]
                        seq = int(data["message"].split()[-1].rstrip("."))
                        rows.append((m.timestamp, data["customer_id"], seq))
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        return rows
    finally:
        await consumer.stop()


async def count_output(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


def summarise(rows: list[tuple[int, str, int]]) -> dict[str, Any]:
    last: dict[str, int] = {}
    violations = 0
    for _, key, seq in rows:
        if seq < last.get(key, 0):
            violations += 1
        last[key] = max(seq, last.get(key, 0))
    times = sorted(t for t, _, _ in rows)
    span_s = max((times[-1] - times[0]) / 1000, 1e-3) if times else 0.0
    return {
        "events": len(rows),
        "seconds": round(span_s, 2),
        "events_per_s": round(len(rows) / span_s, 1) if rows else 0.0,
        "order_violations": violations,
    }


async def wait_count(bootstrap: str, topic: str, target: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await count_output(bootstrap, topic) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: fewer than {target} outputs after {timeout_s} s")
        await asyncio.sleep(0.5)


def env_for(
    bootstrap: str, prefix: str, base_url: str, workdir: Path, **extra: str
) -> dict[str, str]:
    return {
        **os.environ,
        **SECRETS,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HOOKSTREAM_TOPIC_PREFIX": prefix,
        "HOOKSTREAM_AI_BASE_URL": base_url,
        "HOOKSTREAM_STATE_DIR": str(workdir / "state"),
        "HOOKSTREAM_TEST_PARTITIONS": str(PARTITIONS),
        **extra,
    }


async def run_hookstream(
    bootstrap: str, base_url: str, workdir: Path, events: int, n: int = N, rss_at: int = 0
) -> dict[str, Any]:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    roles = ("events", "enriched", "results", "dlq", "receipts")
    await create_topics(
        KafkaSettings(bootstrap_servers=bootstrap),
        {f"{prefix}.{r}": {} for r in roles},
        partitions=PARTITIONS,
    )
    await produce(bootstrap, f"{prefix}.enriched", backlog(prefix, events))
    port = free_port()
    env = env_for(
        bootstrap,
        prefix,
        base_url,
        workdir,
        HOOKSTREAM_TEST_N=str(n),
        HOOKSTREAM_METRICS_PORT=str(port),
    )
    config = write_config(workdir)
    worker = Proc(
        "worker", ["worker", "-c", str(config), "-l", "info"], env, workdir / f"worker-{prefix}.log"
    )
    await worker.start(ready_timeout_s=180)
    try:
        if rss_at:
            url = f"http://127.0.0.1:{port}/metrics"
            for _ in range(1200):
                try:
                    samples = await scrape(url)
                except OSError:
                    samples = {}
                if metric(samples, "hookstream_runner_in_flight", agent="hookstream.ai") >= rss_at:
                    return {
                        "in_flight": metric(
                            samples, "hookstream_runner_in_flight", agent="hookstream.ai"
                        ),
                        "rss_mib": round(
                            metric(samples, "process_resident_memory_bytes") / 2**20, 1
                        ),
                    }
                await asyncio.sleep(0.1)
            raise TimeoutError("the worker never reached the in-flight target")
        await wait_count(bootstrap, f"{prefix}.results", events, timeout_s=events * L_S + 600)
    finally:
        await worker.stop()
    return summarise(await read_output(bootstrap, f"{prefix}.results"))


async def run_faust(
    bootstrap: str, base_url: str, workdir: Path, mode: str, events: int
) -> dict[str, Any]:
    prefix = f"f{uuid.uuid4().hex[:8]}"
    source, output = f"{prefix}.enriched", f"{prefix}.out"
    await create_topics(
        KafkaSettings(bootstrap_servers=bootstrap), {source: {}, output: {}}, partitions=PARTITIONS
    )
    await produce(bootstrap, source, backlog(prefix, events))
    log_path = workdir / f"faust-{mode}.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "bench" / "ai_stage" / "faust_baseline.py"),
            mode,
            bootstrap,
            prefix,
            source,
            output,
            base_url,
            stdout=log_file,
            stderr=log_file,
            cwd=ROOT,
        )
    try:
        await wait_count(bootstrap, output, events, timeout_s=events * L_S + 600)
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()
    return summarise(await read_output(bootstrap, output))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--naive-events", type=int, default=300)
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    results: dict[str, Any] = {
        "setup": {
            "latency_ms": 100,
            "jitter_ms": 20,
            "n": N,
            "events": args.events,
            "keys": KEYS,
            "partitions": PARTITIONS,
            "cpus": os.cpu_count(),
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        async with running_ai_sim(latency_ms=100, jitter_ms=20) as ai:
            print("hookstream AI stage ...", flush=True)
            results["hookstream"] = await run_hookstream(
                bootstrap, ai.base_url, workdir, args.events
            )
            print(results["hookstream"], "\nFaust concurrency=64 ...", flush=True)
            results["faust_concurrency_64"] = await run_faust(
                bootstrap, ai.base_url, workdir, "concurrent", args.events
            )
            print(results["faust_concurrency_64"], "\nnaive Faust agent ...", flush=True)
            results["faust_naive"] = await run_faust(
                bootstrap, ai.base_url, workdir, "naive", args.naive_events
            )
            print(results["faust_naive"], flush=True)
        if not args.skip_rss:
            async with running_ai_sim(latency_ms=2000) as slow:
                print("RSS at 1,000 in flight ...", flush=True)
                results["rss_at_1000_in_flight"] = await run_hookstream(
                    bootstrap, slow.base_url, workdir, 3000, n=250, rss_at=1000
                )
                print(results["rss_at_1000_in_flight"], flush=True)
    target = 0.9 * N / L_S
    hs, naive, conc = results["hookstream"], results["faust_naive"], results["faust_concurrency_64"]
    results["targets"] = {
        "events_per_s_target": target,
        "hookstream_vs_target": round(hs["events_per_s"] / target, 2),
        "hookstream_vs_naive": round(hs["events_per_s"] / max(naive["events_per_s"], 1e-9), 1),
        "hookstream_vs_concurrency_64": round(
            hs["events_per_s"] / max(conc["events_per_s"], 1e-9), 2
        ),
        "met": hs["events_per_s"] >= target
        and hs["order_violations"] == 0
        and hs["events_per_s"] >= 20 * naive["events_per_s"],
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ai_stage.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "ai_stage.md").write_text(render(results))
    print((out / "ai_stage.md").read_text())
    return 0


def render(r: dict[str, Any]) -> str:
    s, t = r["setup"], r["targets"]
    rows = [
        ("hookstream AI stage (OrderedRunner, N=64)", r["hookstream"]),
        ("Faust agent, concurrency=64", r["faust_concurrency_64"]),
        ("naive Faust agent (one call at a time)", r["faust_naive"]),
    ]
    lines = [
        "# AI stage benchmark",
        "",
        f"AI simulator latency {s['latency_ms']} ms ± {s['jitter_ms']} ms; N = {s['n']}; "
        f"{s['events']:,} events over {s['keys']:,} keys on {s['partitions']} partitions "
        f"(naive agent: a smaller slice, enough for its rate); one broker, {s['cpus']} CPUs "
        "shared with the simulator and Kafka. Produced by `make bench-ai` (bench/ai_stage/run.py).",
        "",
        "| consumer | events | seconds | events/s | per-key order violations |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {v['events']:,} | {v['seconds']} | {v['events_per_s']} "
        f"| {v['order_violations']} |"
        for name, v in rows
    ]
    lines += [
        "",
        f"- target 0.9 x N/L = {t['events_per_s_target']:.0f} events/s: hookstream reaches "
        f"{t['hookstream_vs_target']}x of it",
        f"- hookstream vs naive agent: {t['hookstream_vs_naive']}x (target ≥ 20x)",
        f"- hookstream vs Faust concurrency=64: {t['hookstream_vs_concurrency_64']}x",
        f"- all targets met: {t['met']}",
    ]
    if "rss_at_1000_in_flight" in r:
        rss = r["rss_at_1000_in_flight"]
        lines.append(
            f"- worker RSS with {rss['in_flight']:.0f} events in flight: {rss['rss_mib']} MiB"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
