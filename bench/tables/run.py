"""Benchmark: a lookup table of 1,000,000 keys (:mod:`agents.state.table`): load time, memory,
per-lookup cost, each beside a baseline measured in the same run.

A compacted topic of 8 partitions gets 1,000,000 records (keys ``cus-0000000``…, JSON values
of about 100 bytes, like a CRM export's row). Then each measurement runs in a fresh process of
its own (so that one's memory does not count in another's RSS), in interleaved rounds:

- ``table``: :class:`~agents.state.table.KafkaTable` reads the topic to its end, as a worker
  does at start: load time, the process's RSS after it (and its peak), per-lookup cost of
  :meth:`KafkaTable.lookup` and of a whole table lookup through the enrich stage's
  :class:`~agents.outbound.lookups.Enricher` (key template, lookup, metric);
- ``read_only``: the same reader with a callback that keeps nothing: what reading the topic
  costs by itself (the table's load time minus this is its own work);
- ``dict_parsed``: a plain dict of the same keys to the parsed values, built in memory: RSS
  and ``dict.get`` (what keeping parsed objects would cost);
- ``dict_bytes``: a plain dict of the same keys to the value bytes: the least memory the data
  takes in Python, and the cost of ``dict.get`` alone.

RSS growth is the process's VmRSS (what a container's memory limit counts) after loading minus
its VmRSS before, with the modules imported. Writes bench/results/tables.md and tables.json
(``--report`` rewrites the .md from the .json).
Usage: python bench/tables/run.py [--keys 1000000] [--rounds 2] [--report]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

from schemas.config import KafkaSettings  # noqa: E402
from streams.kafka.admin import create_topics  # noqa: E402
from streams.kafka.connection import client_kwargs  # noqa: E402

PARTITIONS = 8
LOOKUPS = 200_000
MODES = ("read_only", "table", "dict_bytes", "dict_parsed")
PLANS = ("free", "team", "pro", "enterprise")


def key_of(i: int) -> str:
    return f"cus-{i:07d}"


def value_of(i: int) -> bytes:
    """About 100 bytes of JSON, varied like a real row. Copied: orjson's own bytes object keeps
    the buffer it was written in (about 4 KiB per value measured), a record's value does not."""
    return bytes(
        memoryview(
            orjson.dumps(
                {
                    "name": f"Customer {i}",
                    "plan": PLANS[i % 4],
                    "country": "DE",
                    "mrr_usd": round(i % 997 * 1.37, 2),
                    "since": f"20{10 + i % 15}-0{1 + i % 9}-1{i % 10}",
                    "owner": f"am-{i % 40}",
                }
            )
        )
    )


def rss_bytes() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, in bytes."""
    found: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(rest.split()[0]) * 1024
    return found["VmRSS"], found["VmHWM"]


async def produce(settings: KafkaSettings, topic: str, keys: int) -> float:
    producer = AIOKafkaProducer(
        **client_kwargs(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=50,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        for start in range(0, keys, 20_000):
            for i in range(start, min(start + 20_000, keys)):
                await producer.send(topic, value_of(i), key=key_of(i).encode())
            await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


def per_call_ns(call: Any, keys: list[str]) -> float:
    started = time.perf_counter_ns()
    for key in keys:
        call(key)
    return (time.perf_counter_ns() - started) / len(keys)


def sample_keys(count: int) -> list[str]:
    rng = random.Random(7)  # noqa: S311 - a sample, not a secret
    return [key_of(rng.randrange(count)) for _ in range(LOOKUPS)]


async def child(mode: str, topic: str, bootstrap: str, count: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    from agents.state.table import KafkaTable  # imported before the baseline RSS
    from streams.kafka.compacted import CompactedReader

    settings = KafkaSettings(bootstrap_servers=bootstrap)
    keys = sample_keys(count)
    gc.collect()
    before, _ = rss_bytes()
    out: dict[str, Any] = {"mode": mode}
    started = time.perf_counter()
    if mode == "read_only":
        reader = CompactedReader(settings, topic, lambda key, value: None)
        await reader.start(load=True)
        out["load_s"] = time.perf_counter() - started
        out["records"] = reader.records_read
        await reader.stop()
    elif mode == "table":
        table = KafkaTable(settings, topic)
        await table.start()
        out["load_s"] = time.perf_counter() - started
        out["entries"] = len(table)
        out["lookup_ns"] = per_call_ns(table.lookup, keys)
        out["miss_ns"] = per_call_ns(table.lookup, [f"x{k}" for k in keys])
        out["enricher_ns"] = await enricher_ns(table, keys)
        gc.collect()
        out["rss_after_bytes"], out["rss_peak_bytes"] = rss_bytes()
        await table.stop()
    else:
        parsed = mode == "dict_parsed"
        data: dict[str, Any] = {}
        for i in range(count):
            raw = value_of(i)
            data[key_of(i)] = orjson.loads(raw) if parsed else raw
        out["load_s"] = time.perf_counter() - started
        out["entries"] = len(data)
        out["lookup_ns"] = per_call_ns(data.get, keys)
    if "rss_after_bytes" not in out:
        gc.collect()
        out["rss_after_bytes"], out["rss_peak_bytes"] = rss_bytes()
    out["rss_before_bytes"] = before
    out["rss_delta_bytes"] = out["rss_after_bytes"] - before
    return out


def config_from(text: str) -> Any:
    from schemas.config_loader import load_config

    path = Path(f"/tmp/bench-tables-{os.getpid()}.yaml")  # noqa: S108 - a scratch file
    path.write_text(text)
    try:
        return load_config(path, require_secrets=False)
    finally:
        path.unlink()


async def enricher_ns(table: Any, keys: list[str]) -> float:
    """A whole table lookup as the enrich stage makes it: render the key, look up, observe."""
    from agents.outbound.lookups import Enricher

    text = (ROOT / "examples" / "flows.yaml").read_text()
    text = text.replace(
        "      - name: customer\n        url: ${HOOKSTREAM_CRM_URL:-http://127.0.0.1:8092}"
        "/customers/{{ data.customer_id }}\n        timeout_s: 5\n",
        f"      - name: customer\n        table: {{topic: {table.topic}, key: "
        '"{{ data.customer_id }}"}\n',
    )
    config = await asyncio.to_thread(config_from, text)
    flow = config.flows[0]
    lookup = flow.enrich[0]
    assert lookup.table is not None
    enricher = Enricher(config, lambda guard: None, {table.topic: table})  # type: ignore[arg-type,return-value]
    contexts = [{"data": {"customer_id": key}} for key in keys]
    started = time.perf_counter_ns()
    for context in contexts:
        await enricher._lookup(flow, lookup, context)
    return (time.perf_counter_ns() - started) / len(contexts)


def run_child(mode: str, topic: str, bootstrap: str, count: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--topic", topic, "--keys", str(count)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def best(runs: list[dict[str, Any]], field: str) -> float:
    return float(min(run[field] for run in runs if field in run))


def report(meta: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> str:
    keys = meta["keys"]
    mib = 1024 * 1024
    table, dict_bytes = runs["table"], runs["dict_bytes"]
    parsed, reading = runs["dict_parsed"], runs["read_only"]
    per_entry = best(table, "rss_delta_bytes") / keys
    lines = [
        "# Lookup table benchmark",
        "",
        f"A compacted topic of {PARTITIONS} partitions holding {keys:,} keys (`cus-0000000`…, "
        f"JSON values of {meta['value_bytes_mean']:.0f} bytes on average, {meta['topic_mib']:.0f}"
        " MiB of keys and values), on the shared local broker; each measurement in a fresh "
        f"process, {meta['rounds']} interleaved rounds, the best shown; {os.cpu_count()} CPUs "
        f"shared with the broker (load average {meta['load_average']}). Produced by "
        "`python bench/tables/run.py` on "
        f"{meta['date']}.",
        "",
        "| what | load, s | RSS growth, MiB | bytes per entry | lookup, µs "
        "| process peak RSS, MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, runs_of: list[dict[str, Any]], lookup_field: str | None) -> str:
        delta = best(runs_of, "rss_delta_bytes")
        lookup = f"{best(runs_of, lookup_field) / 1000:.2f}" if lookup_field else "-"
        peak = best(runs_of, "rss_peak_bytes") / mib
        return (
            f"| {name} | {best(runs_of, 'load_s'):.2f} | {delta / mib:.0f} | "
            f"{delta / keys:.0f} | {lookup} | {peak:.0f} |"
        )

    lines += [
        row("hookstream table (`KafkaTable`): read to the end, keep the bytes", table, "lookup_ns"),
        row("baseline: reading the topic only (same reader, nothing kept)", reading, None),
        row("baseline: plain dict of the value bytes (built in memory)", dict_bytes, "lookup_ns"),
        row("baseline: plain dict of parsed values (built in memory)", parsed, "lookup_ns"),
        "",
        f"- **per entry** the table's process grew by **{per_entry:.0f} bytes** for "
        f"{meta['value_bytes_mean']:.0f}-byte values and 11-byte keys; a plain dict of the same "
        f"bytes takes {best(dict_bytes, 'rss_delta_bytes') / keys:.0f}, of parsed values "
        f"{best(parsed, 'rss_delta_bytes') / keys:.0f}.",
        f"- **lookup**: `KafkaTable.lookup` {best(table, 'lookup_ns') / 1000:.2f} µs for a key it "
        f"holds (parses the value: each event gets its own copy), "
        f"{best(table, 'miss_ns') / 1000:.2f} µs for one it does not; a whole table lookup in "
        "the enrich stage (key template rendered, lookup, `hookstream_lookup_seconds` observed) "
        f"{best(table, 'enricher_ns') / 1000:.2f} µs. A plain dict's `get`: "
        f"{best(dict_bytes, 'lookup_ns') / 1000:.2f} µs.",
        f"- **load**: {best(table, 'load_s'):.2f} s for {keys:,} records "
        f"({keys / best(table, 'load_s'):,.0f} records/s), of which reading the topic alone "
        f"takes {best(reading, 'load_s'):.2f} s; a worker's agents start after it.",
        f"- producing the topic took {meta['produce_s']:.1f} s.",
        "",
        "Every round:",
        "",
        "| mode | load, s | RSS growth, MiB | lookup, µs |",
        "|---|---:|---:|---:|",
    ]
    for mode in MODES:
        for run in runs[mode]:
            lookup = f"{run['lookup_ns'] / 1000:.2f}" if "lookup_ns" in run else "-"
            lines.append(
                f"| {mode} | {run['load_s']:.2f} | {run['rss_delta_bytes'] / mib:.0f} | {lookup} |"
            )
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> None:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    topic = f"bench-table-{uuid.uuid4().hex[:8]}"
    await create_topics(settings, {topic: {"cleanup.policy": "compact"}}, partitions=PARTITIONS)
    print(f"producing {args.keys:,} records to {topic}", flush=True)
    produce_s = await produce(settings, topic, args.keys)
    sizes = [len(value_of(i)) for i in range(0, args.keys, max(1, args.keys // 10_000))]
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for round_no in range(args.rounds):
        for mode in MODES:
            result = run_child(mode, topic, bootstrap, args.keys)
            runs[mode].append(result)
            print(f"round {round_no + 1} {mode}: {result}", flush=True)
    value_mean = sum(sizes) / len(sizes)
    meta = {
        "keys": args.keys,
        "partitions": PARTITIONS,
        "value_bytes_mean": value_mean,
        "topic_mib": args.keys * (value_mean + 11) / 1024 / 1024,
        "rounds": args.rounds,
        "produce_s": produce_s,
        "lookups_timed": LOOKUPS,
        "load_average": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
    }
    results = ROOT / "bench" / "results"
    (results / "tables.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    (results / "tables.md").write_text(report(meta, runs))
    print((results / "tables.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--topic")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        results = ROOT / "bench" / "results"
        saved = json.loads((results / "tables.json").read_text())
        (results / "tables.md").write_text(report(saved["meta"], saved["runs"]))
        return
    if args.child:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
        result = asyncio.run(child(args.child, args.topic, bootstrap, args.keys))
        print(json.dumps(result))
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
