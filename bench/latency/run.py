"""End-to-end latency: a signed webhook in at the gateway → its update accepted by the CRM.

At a low, steady rate (one webhook every ``--interval-s``) the whole stack runs as in
production: gateway, worker and sink worker as separate ``hookstream`` processes, the AI model
and the CRM played by the bundled simulators (answering at once), one real Kafka broker. Each
hop is timed from the Kafka timestamps of the records it wrote (all processes share this
machine's clock): gateway write → enriched → AI result → delivery remembered (written once
the CRM accepted the update).

Baseline, in the same run: one bare Kafka hop (aiokafka producer → a subscribed aiokafka
consumer at its defaults) at the same rate. hookstream's path has three such hops plus three
HTTP calls (the enrichment lookup, the model, the CRM), so three bare hops are its floor.
Writes bench/results/latency.json and latency.md. Run it with ``make bench-latency``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
NOTES = Path(__file__).resolve().parent / "NOTES.md"  # kept by hand, appended to latency.md
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from tests.support.kafka import create_topic, read_all  # noqa: E402
from tests.support.stack import EXAMPLE_CONFIG, running_stack  # noqa: E402

HOPS = ("events", "enriched", "results", "delivered")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5), 1),
        "p90_ms": round(percentile(values, 0.9), 1),
        "p99_ms": round(percentile(values, 0.99), 1),
        "max_ms": round(max(values), 1),
        "mean_ms": round(statistics.fmean(values), 1),
    }


async def bare_hop(bootstrap: str, count: int, interval_s: float) -> list[float]:
    """Produce → consume delay of one plain aiokafka hop, ms per record."""
    topic = await create_topic(bootstrap, "latency-bare", 8)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    delays: list[float] = []
    try:
        for _ in range(300):  # until the group has given the consumer its partitions
            if consumer.assignment():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)

        async def consume() -> None:
            async for message in consumer:
                delays.append((time.time() - float(message.value)) * 1000)
                if len(delays) == count:
                    return

        reading = asyncio.create_task(consume())
        for index in range(count):
            await producer.send_and_wait(topic, str(time.time()).encode(), key=b"%d" % index)
            await asyncio.sleep(interval_s)
        await asyncio.wait_for(reading, 30)
    finally:
        await producer.stop()
        await consumer.stop()
    return delays


def config_with_linger(tmp: Path, linger_ms: int | None) -> Path:
    """The example config, with ``kafka.linger_ms`` set when asked (the workers' producers)."""
    if linger_ms is None:
        return EXAMPLE_CONFIG
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config.setdefault("kafka", {})["linger_ms"] = linger_ms
    path = tmp / "flows.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def through_hookstream(
    bootstrap: str, count: int, interval_s: float, linger_ms: int | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hookstream-latency-") as tmp:
        config = config_with_linger(Path(tmp), linger_ms)
        async with running_stack(bootstrap, Path(tmp), config_path=config) as stack:
            await asyncio.sleep(5)  # the workers join their groups and settle
            ids: list[str] = []
            for index in range(count):
                webhook_id = f"wh-{uuid.uuid4().hex}"
                body = {
                    "event": "ticket.created",
                    "ticket_id": f"T-{index}",
                    "customer_id": f"cus_{index % 50:03d}",
                    "message": "The export is broken again since the last update.",
                }
                status, answer, _ = await stack.post("helpdesk", body, webhook_id=webhook_id)
                if status != 202:
                    raise SystemExit(f"bench: the gateway answered {status}: {answer}")
                ids.append(webhook_id)
                await asyncio.sleep(interval_s)
            await stack.crm.wait_for_updates(count, timeout_s=120)
            stamps: dict[str, dict[str, int]] = {i: {} for i in ids}
            for hop in HOPS:
                for record in await read_all(bootstrap, stack.topic(hop)):
                    text = (record.key or b"").decode() + (record.value or b"").decode()
                    for webhook_id in ids:
                        if webhook_id in text:
                            # the first record of a hop per event (delivered: the CRM sink's)
                            stamps[webhook_id].setdefault(hop, record.timestamp_ms)
    per_hop: dict[str, list[float]] = {f"{a} → {b}": [] for a, b in itertools.pairwise(HOPS)}
    total: list[float] = []
    for webhook_id, seen in stamps.items():
        if set(seen) != set(HOPS):
            raise SystemExit(f"bench: {webhook_id} is missing hops: {sorted(seen)}")
        for a, b in itertools.pairwise(HOPS):
            per_hop[f"{a} → {b}"].append(seen[b] - seen[a])
        total.append(seen["delivered"] - seen["events"])
    slowest = max(range(len(total)), key=total.__getitem__)
    return {
        "total": summary(total),
        "hops": {k: summary(v) for k, v in per_hop.items()},
        # Which webhook, in sending order (0 = the first), took the longest end to end.
        "slowest_index": slowest,
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    hops = dict(report["hookstream"]["hops"])
    hops["**gateway write → CRM update remembered**"] = report["hookstream"]["total"]
    rows = "\n".join(
        f"| {name} | {v['p50_ms']} | {v['p90_ms']} | {v['p99_ms']} | {v['max_ms']} |"
        for name, v in hops.items()
    )
    b = report["bare_hop"]
    return f"""# End-to-end latency

`make bench-latency` (bench/latency/run.py): {s["count"]} signed webhooks, one every
{s["interval_s"]} s, through the gateway, the worker (enrichment lookup, AI model) and the sink
worker (CRM update), each its own process; the AI model and the CRM are the bundled simulators,
answering at once. Hops are timed from the Kafka timestamps of the records each stage wrote.

| hop | p50 ms | p90 ms | p99 ms | max ms |
|---|---:|---:|---:|---:|
{rows}

Baseline in the same run: one bare aiokafka hop (producer → subscribed consumer, defaults) at
the same rate: p50 {b["p50_ms"]} ms, p90 {b["p90_ms"]} ms, p99 {b["p99_ms"]} ms,
max {b["max_ms"]} ms. hookstream's path is three Kafka hops plus three HTTP calls: its median is
**{report["ratio_p50_vs_three_bare_hops"]} x** three bare hops' medians. The slowest webhook end to
end was number {report["hookstream"].get("slowest_index", "?")} in sending order (0: the first).

Machine: {report["machine"]["cores"]} cores shared with the broker and the simulators;
Python {report["machine"]["python"]}; Apache Kafka 4.1.1 (scripts/kafka, single node, KRaft).

{NOTES.read_text() if NOTES.exists() else ""}"""


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--interval-s", type=float, default=0.25)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--linger-ms",
        type=int,
        default=None,
        help="kafka.linger_ms for the stack (default: the config's)",
    )
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        raise SystemExit("bench: set KAFKA_BOOTSTRAP_SERVERS (make bench-latency starts a broker)")
    bare = await bare_hop(bootstrap, args.count, args.interval_s)
    print(f"bench: bare hop {summary(bare)}", flush=True)
    hookstream = await through_hookstream(bootstrap, args.count, args.interval_s, args.linger_ms)
    print(f"bench: hookstream {hookstream}", flush=True)
    bare_p50 = percentile(bare, 0.5)
    report = {
        "settings": {
            "count": args.count,
            "interval_s": args.interval_s,
            "linger_ms": args.linger_ms,
        },
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "bare_hop": summary(bare),
        "hookstream": hookstream,
        "ratio_p50_vs_three_bare_hops": round(hookstream["total"]["p50_ms"] / (3 * bare_p50), 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "latency.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
