"""The capacity page's arithmetic checked on this machine: one worker process, then two.

From the one-worker run (CPU per event of the worker, of the broker and of the model
simulator), docs/capacity.md predicts what two worker processes in one consumer group reach on
this machine's cores; the two-worker run measures it. Rounds alternate (one, two, one, two, ...)
on the shared broker, each on topics of its own, the events pre-loaded once the workers have
joined their group. The model simulator answers at once; every prompt differs (no cache hit).
Writes bench/results/capacity.json and capacity.md. ``python bench/capacity/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiokafka import AIOKafkaConsumer
from workers import (
    RESULTS,
    config,
    count_records,
    cpu_s,
    listener_pid,
    load_average,
    machine_busy_s,
    preload,
    stop_all,
    worker,
)

from tests.support.sims import running_ai_sim, running_crm_sim

CONCURRENCY = 256
KEYS = 1000
SETTLE_S = 10.0  # the group's rebalance after the workers start, before any event is written


async def one_round(
    bootstrap: str, workdir: Path, urls: dict[str, str], sim_pid: int, n_workers: int, events: int
) -> dict[str, Any]:
    prefix = f"cap{uuid.uuid4().hex[:8]}"
    cfg = config(CONCURRENCY, ai_timeout_s=30)
    procs = [worker(workdir, prefix, f"w{i}-{prefix}", cfg, urls) for i in range(n_workers)]
    broker = listener_pid(int(bootstrap.rsplit(":", 1)[1]))
    counter = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await counter.start()
    try:
        await asyncio.gather(*(proc.start(ready_timeout_s=180) for proc in procs))
        await asyncio.sleep(SETTLE_S)
        load = load_average()
        pids = {p.name: p.process.pid for p in procs if p.process is not None}
        others = {"broker": broker, "model_sim": sim_pid}
        loading = asyncio.create_task(preload(bootstrap, prefix, events, KEYS))
        first: tuple[float, dict[str, float], int] | None = None
        deadline = time.monotonic() + events / 20 + 300
        while True:
            done = await count_records(counter, f"{prefix}.results")
            now = time.monotonic()
            cpu = {name: cpu_s(pid) for name, pid in {**pids, **others}.items() if pid}
            cpu["machine"] = machine_busy_s()
            if first is None and done > 0:
                first = (now, cpu, done)
            if first is not None and done >= events:
                break
            if now > deadline:
                raise TimeoutError(f"only {done} of {events} results")
            await asyncio.sleep(0.25)
        await loading
    finally:
        await counter.stop()
        await stop_all(procs)
    wall_s, counted = now - first[0], done - first[2]
    used = {name: cpu[name] - first[1][name] for name in cpu}
    workers_cpu = sum(used[name] for name in pids)
    ours = workers_cpu + sum(used[name] for name in others if name in used)
    return {
        "workers": n_workers,
        "load_average": load,
        "events": counted,
        "events_per_s": round(counted / wall_s, 1),
        "cpu_us_per_event": {
            "workers": round(workers_cpu / counted * 1e6, 1),
            **{name: round(used[name] / counted * 1e6, 1) for name in others if name in used},
        },
        "cores_busy": {
            "workers": round(workers_cpu / wall_s, 2),
            **{name: round(used[name] / wall_s, 2) for name in others if name in used},
            "each_worker": [round(used[name] / wall_s, 2) for name in pids],
            # the broker's own share is in "broker": it serves other work too
            "other_processes": round((used["machine"] - ours) / wall_s, 2),
        },
        "load_average_at_end": load_average(),
    }


def median(rounds: list[dict[str, Any]], *path: str) -> float:
    values: list[float] = []
    for r in rounds:
        value: Any = r
        for key in path:
            value = value[key]
        values.append(value)
    return round(statistics.median(values), 2)


def predict(one: dict[str, Any], cores: float) -> dict[str, Any]:
    """Two workers from one worker's figures: each worker as fast as one alone, unless the
    cores left by other work run out first (workers, broker and simulator per event, all on
    them)."""
    per_event_s = sum(one["cpu_us_per_event"].values()) / 1e6
    by_workers = 2 * one["events_per_s"]
    by_cores = cores / per_event_s
    return {
        "events_per_s": round(min(by_workers, by_cores), 1),
        "by_workers_events_per_s": round(by_workers, 1),
        "by_cores_events_per_s": round(by_cores, 1),
        "workers_cpu_us_per_event": one["cpu_us_per_event"]["workers"],
        "machine_cpu_us_per_event": round(per_event_s * 1e6, 1),
    }


def markdown(report: dict[str, Any]) -> str:
    rows = []
    for r in report["rounds"]:
        c, b = r["cpu_us_per_event"], r["cores_busy"]
        each = ", ".join(map(str, b["each_worker"]))
        rows.append(
            f"| {r['workers']} | {r['events_per_s']} | {c['workers']} | {c.get('broker', '-')} "
            f"| {c.get('model_sim', '-')} | {b['workers']} ({each}) "
            f"| {b.get('other_processes', '-')} | {r['load_average'][0]} |"
        )
    p, o = report["predicted_two"], report["observed_two"]
    return f"""# Capacity check: one worker process, then two

`python bench/capacity/run.py`: {report["settings"]["events"]:,} pre-loaded events over
{KEYS:,} keys on 8 partitions per round, rounds alternating one worker / two workers (one
consumer group) on the shared broker; the model simulator answers at once, every prompt
differs; flow `max_concurrency` {CONCURRENCY}. CPU is each process's utime + stime from the
first result to the last. {report["machine"]["cores"]} cores, shared with the broker, the
simulator and other work: "others" is the cores the machine's other processes kept busy
during the round (/proc/stat less the round's own processes), the load average is at the
round's start.

| workers | events/s | CPU µs/event: workers | broker | model sim | cores: workers | others | load |
|---|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Two workers predicted from the one-worker rounds (medians; docs/capacity.md's arithmetic):

| | predicted | observed (median) |
|---|---:|---:|
| events/s | {p["events_per_s"]} | {o["events_per_s"]} |
| workers' CPU per event, µs | {p["workers_cpu_us_per_event"]} | {o["workers_cpu_us_per_event"]} |

The prediction is the lower of two bounds: each worker as fast as one alone (2 x
{p["by_workers_events_per_s"] / 2}); the cores other work left the two-worker rounds
(median {p["cores_free"]} of {report["machine"]["cores"]}) divided by
{p["machine_cpu_us_per_event"]} µs (the CPU per event of the workers, the broker and the
simulator together) = {p["by_cores_events_per_s"]}.
Observed / predicted throughput: **{report["observed_vs_predicted"]}**.
Python {report["machine"]["python"]}.
"""


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each (one, two)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        raise SystemExit("bench: set KAFKA_BOOTSTRAP_SERVERS")
    cores = os.cpu_count() or 1
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hookstream-capacity-") as tmp:
        async with running_ai_sim() as ai, running_crm_sim() as crm:
            urls = {"ai": ai.base_url, "crm": crm.base_url}
            for _ in range(args.rounds):
                for n in (1, 2):
                    result = await one_round(
                        bootstrap, Path(tmp), urls, ai.process.pid, n, args.events
                    )
                    print(f"bench: {json.dumps(result)}", flush=True)
                    rounds.append(result)
    ones = [r for r in rounds if r["workers"] == 1]
    twos = [r for r in rounds if r["workers"] == 2]
    one = {
        "events_per_s": median(ones, "events_per_s"),
        "cpu_us_per_event": {
            name: median(ones, "cpu_us_per_event", name) for name in ones[0]["cpu_us_per_event"]
        },
    }
    # The cores other work left the two-worker rounds: this machine is shared, and no
    # arithmetic predicts what other people run on it.
    free = round(cores - median(twos, "cores_busy", "other_processes"), 2)
    predicted = {**predict(one, free), "cores_free": free}
    observed = {
        "events_per_s": median(twos, "events_per_s"),
        "workers_cpu_us_per_event": median(twos, "cpu_us_per_event", "workers"),
    }
    report = {
        "settings": {"events": args.events, "keys": KEYS, "max_concurrency": CONCURRENCY},
        "machine": {"cores": cores, "python": platform.python_version()},
        "rounds": rounds,
        "one_worker_median": one,
        "predicted_two": predicted,
        "observed_two": observed,
        "observed_vs_predicted": round(observed["events_per_s"] / predicted["events_per_s"], 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "capacity.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "capacity.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
