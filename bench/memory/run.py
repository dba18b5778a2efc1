"""Worker memory: the durable maps at 1,000,000 entries, and a worker with 10,000 events in flight.

1. **Maps** (bench/memory/maps.py, each in a fresh process): the dedupe and AI-cache maps
   (``agents.state.durable_map``) filled with 1,000,000 entries as a worker loads them from
   Kafka, against the least such a map can hold (a ``set`` of the keys; a ``dict`` of the
   entries' JSON bytes). With ``--before TREE``, the same for the code in TREE (e.g. a
   ``git archive`` of the commit before a change), in the same run.
2. **In flight**: one worker whose model answers only after 10 minutes, flow
   ``max_concurrency`` 2,500 (the runner admits 4 x that: 10,000 events), 10,000 events on
   10,000 keys pre-loaded. The worker's RSS once 10,000 events are admitted (the runner's
   ``hookstream_runner_in_flight`` gauge), against its RSS when ready with none.

Writes bench/results/memory.json and memory.md. ``python bench/memory/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "capacity"))

import aiohttp  # noqa: E402
from workers import (  # noqa: E402
    RESULTS,
    config,
    load_average,
    preload,
    rss_mib,
    stop_all,
    worker,
)

from tests.support.broker import free_port  # noqa: E402
from tests.support.sims import running_ai_sim, running_crm_sim  # noqa: E402

MAP_MODES = ("dedupe", "set", "cache", "dict_bytes")
IN_FLIGHT = 10_000
_GAUGE = re.compile(r'^hookstream_runner_in_flight\{agent="([^"]+)"\} ([0-9.e+]+)$', re.M)


def measure_map(mode: str, count: int, tree: Path | None) -> dict[str, Any]:
    args = [sys.executable, str(HERE / "maps.py"), mode, str(count)]
    if tree is not None:
        args.append(str(tree))
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


async def in_flight(bootstrap: str, events: int) -> dict[str, Any]:
    concurrency = events // 4
    prefix = f"mem{uuid.uuid4().hex[:8]}"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hookstream-memory-") as tmp:
        async with (
            running_ai_sim(latency_ms=600_000) as ai,
            running_crm_sim() as crm,
            aiohttp.ClientSession() as http,
        ):
            proc = worker(
                Path(tmp),
                prefix,
                "worker",
                config(concurrency, ai_timeout_s=600),
                {"ai": ai.base_url, "crm": crm.base_url},
                {"HOOKSTREAM_METRICS_PORT": str(port)},
            )
            try:
                await preload(bootstrap, prefix, 0, 1)  # topics only: the worker starts idle
                await proc.start(ready_timeout_s=180)
                assert proc.process is not None
                pid = proc.process.pid
                idle = rss_mib(pid)
                load = load_average()
                await preload(bootstrap, prefix, events, events)
                deadline = time.monotonic() + 600
                gauges: dict[str, float] = {}
                while time.monotonic() < deadline:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
                        text = await answer.text()
                    gauges = {name: float(v) for name, v in _GAUGE.findall(text)}
                    if max(gauges.values(), default=0) >= events:
                        break
                    await asyncio.sleep(0.5)
                else:
                    raise TimeoutError(f"in flight after 600 s: {gauges}")
                full = rss_mib(pid)
            finally:
                await stop_all([proc])
    return {
        "events_in_flight": gauges,
        "max_concurrency": concurrency,
        "rss_idle_mib": round(idle, 1),
        "rss_in_flight_mib": round(full, 1),
        "kib_per_event_in_flight": round((full - idle) * 1024 / events, 1),
        "load_average": load,
    }


def markdown(report: dict[str, Any]) -> str:
    count = report["settings"]["entries"]
    rows = []
    before = report.get("maps_before") or {}
    for mode, r in report["maps"].items():
        code = [("now", r), ("before", before[mode])] if mode in before else [("baseline", r)]
        for label, figures in code:
            rows.append(
                f"| {mode} | {label} | {figures['rss_growth_mib']} "
                f"| {figures['bytes_per_entry']} | {figures['lookup_us']} "
                f"| {figures.get('apply_us') or '-'} |"
            )
    f = report.get("in_flight")
    flight = (
        f"""## A worker with {IN_FLIGHT:,} events in flight

The model simulator answers after 10 minutes; flow `max_concurrency` {f["max_concurrency"]:,}
(the runner admits 4 x that); {IN_FLIGHT:,} events on as many keys. In flight when measured
(the runner's gauge, per agent): {f["events_in_flight"]}.

| worker RSS ready, no event | with {IN_FLIGHT:,} in flight | per event in flight |
|---:|---:|---:|
| {f["rss_idle_mib"]} MiB | {f["rss_in_flight_mib"]} MiB | {f["kib_per_event_in_flight"]} KiB |

Load average at the start: {f["load_average"]}.
"""
        if f
        else ""
    )
    return f"""# Worker memory

`python bench/memory/run.py`.

## The durable maps at {count:,} entries

Each row a fresh process filling the map as a worker loads it from Kafka (`DurableMap._apply`);
RSS growth over the fill; lookup = one `get` of a key held (CPU time, best of 3 x 200,000);
a record read = the CPU time of `_apply` for one more record as the tail hands it (100,000
timed, aiokafka's own cost not in it). "before" is the code before
the change, measured in the same run.

- dedupe keys: `seen/helpdesk/msg_<27>` and `done/triage/helpdesk/msg_<27>` (one of each per
  event), value 1; `set`: a plain set of the same keys (the least a dedupe can hold);
- cache: sha256 hex keys, values of provider, model, a three-field output and token usage
  (~260 bytes of JSON); `dict_bytes`: a plain dict of the same keys to those JSON bytes.

| map | code | RSS growth, MiB | bytes per entry | lookup, µs | a record read, µs |
|---|---|---:|---:|---:|---:|
{chr(10).join(rows)}

{flight}
Python {report["machine"]["python"]}, {report["machine"]["cores"]} cores shared with other work.
"""


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--before", type=Path, default=None, help="a source tree to compare")
    parser.add_argument("--skip-in-flight", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render", type=Path, help="only write memory.md from this JSON")
    args = parser.parse_args()
    if args.render is not None:
        (args.out / "memory.md").write_text(markdown(json.loads(args.render.read_text())))
        return 0
    report: dict[str, Any] = {
        "settings": {"entries": args.entries, "in_flight": IN_FLIGHT},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "maps": {mode: measure_map(mode, args.entries, None) for mode in MAP_MODES},
    }
    if args.before is not None:
        report["maps_before"] = {
            mode: measure_map(mode, args.entries, args.before) for mode in ("dedupe", "cache")
        }
    print(f"bench: maps {json.dumps(report['maps'])}", flush=True)
    if not args.skip_in_flight:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            raise SystemExit("bench: set KAFKA_BOOTSTRAP_SERVERS")
        report["in_flight"] = await in_flight(bootstrap, IN_FLIGHT)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "memory.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
