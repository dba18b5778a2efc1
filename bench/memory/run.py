"""Worker memory: the durable maps at 1,000,000 entries, and a worker with 10,000 events in flight.

1. **Maps** (bench/memory/maps.py, each in a fresh process): the dedupe and AI-cache maps
   (``agents.state.durable_map``) filled with 1,000,000 entries as a worker loads them from
   Kafka, in each record form a map topic holds: one record per entry (the older form), batch
   records of 1, 4 (a loaded worker's typical) and as many entries as the cap allows (what
   workers write since session 11-12); against the least such a map can hold (a ``set`` of
   the keys; a ``dict`` of the entries' JSON bytes). Then the CPU per entry read, every form
   interleaved in one process per map holding 1,000,000 entries: aiokafka's decode of the
   records and the map's ``_apply``. With ``--before TREE``, the one-record-per-entry rows
   for the code in TREE (e.g. a ``git archive`` of the commit before a change), in the same run.
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

FORMS = ("", "@1", "@4", "@cap")
MAP_MODES = (
    *(f"dedupe{form}" for form in FORMS),
    "set",
    *(f"cache{form}" for form in FORMS),
    "dict_bytes",
)
READ_MODES = ("read-dedupe", "read-cache")
FORM_NAMES = {
    "": "a record per entry (older form)",
    "@1": "batch records of 1 (an event alone)",
    "@4": "batch records of 4 (a loaded worker)",
    "@cap": "batch records at the cap",
}
READ_FORM_NAMES = {"single": "", "1": "@1", "4": "@4", "cap": "@cap"}
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


READ_HEADER = (
    "| map | form | entries per record | record bytes | aiokafka decode, µs | `_apply`, µs "
    "| read, µs per entry | vs a record per entry |\n|---|---|---:|---:|---:|---:|---:|---:|"
)


def _map_rows(report: dict[str, Any]) -> list[str]:
    rows = []
    before = report.get("maps_before") or {}
    for mode, r in report["maps"].items():
        kind, _, form = mode.partition("@")
        if kind in ("set", "dict_bytes"):
            label = "baseline"
        else:
            label = FORM_NAMES["@" + form if form else ""]
        per_record = round(r["entries"] / r["records"], 1) if r.get("records") else "-"
        code = [(label, r)]
        if mode in before:
            code.append((f"{label}, the code before", before[mode]))
        for name, figures in code:
            rows.append(
                f"| {kind} | {name} | {per_record} | {figures['rss_growth_mib']} "
                f"| {figures['bytes_per_entry']} | {figures['lookup_us']} |"
            )
    return rows


def _read_rows(report: dict[str, Any]) -> list[str]:
    rows = []
    before = report.get("read_before") or {}
    for mode, r in (report.get("read") or {}).items():
        kind = mode.removeprefix("read-")
        runs = [("", r)] + ([(", the code before", before[mode])] if mode in before else [])
        for form in r["forms"]:
            for label, run in runs:
                f = run["forms"][form]
                single = run["forms"]["single"]["read_us_per_entry"]
                sums = [
                    a + d
                    for a, d in zip(
                        f["apply_us_per_entry_all"], f["decode_us_per_entry_all"], strict=True
                    )
                ]
                rows.append(
                    f"| {kind} | {FORM_NAMES[READ_FORM_NAMES[form]]}{label} "
                    f"| {f['entries_per_record']} | {f['record_bytes']:,} "
                    f"| {f['decode_us_per_entry']} | {f['apply_us_per_entry']} "
                    f"| **{f['read_us_per_entry']}** ({min(sums):.2f}-{max(sums):.2f}) "
                    f"| {f['read_us_per_entry'] / single:.2f}x |"
                )
    return rows


def markdown(report: dict[str, Any]) -> str:
    count = report["settings"]["entries"]
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
    read = report.get("read") or {}
    chunk: dict[str, Any] = next(iter(read.values()), {})
    notes = "".join(f"- {note}\n" for note in report.get("notes", []))
    notes = f"## What it shows\n\n{notes}\n" if notes else ""
    before_note = (
        f' "The code before": the same measurement of {report["before"]}, each right'
        " after this code's."
        if report.get("before")
        else ""
    )
    return f"""# Worker memory

`python bench/memory/run.py`.

## The durable maps at {count:,} entries

Each row a fresh process filling the map as a worker loads it from Kafka (`DurableMap._apply`,
record by record), in one of the record forms a map topic holds: a record per entry
(`{{"written_at", "value"}}`: what workers wrote before sessions 11-12, what `replay --batch`
and the batcher still write) or the batch records workers write since (`marks/<id>` ->
`{{"written_at", "marks", "values"}}`, encoded by `durable_map._encode_entries`), of 1 entry
(an event finishing alone), 4 (a loaded worker: 2.7-4.4 in the pipeline benchmark,
[pipeline-worker-12-first](pipeline-worker-12-first.md)) or as many as the cap allows
(1,000 entries or 128 KiB). RSS growth over the fill; lookup = one `get` of a key held (CPU
time, best of 3 x 200,000).{before_note}

- dedupe keys: `seen/helpdesk/msg_<27>` and `done/triage/helpdesk/msg_<27>` (half each), value
  1; `set`: a plain set of the same keys (the least a dedupe can hold);
- cache: sha256 hex keys, values of provider, model, a three-field output and token usage
  (~260 bytes of JSON); `dict_bytes`: a plain dict of the same keys to those JSON bytes.

| map | form | entries per record | RSS growth, MiB | bytes per entry | lookup, µs |
|---|---|---:|---:|---:|---:|
{chr(10).join(_map_rows(report))}

## CPU per entry read

What every worker's tail pays for each entry any worker writes. One process per map: the map
filled with {count:,} entries (batch records of 4, then `gc.freeze()` as the worker does after
start-up), then {chunk.get("rounds", "-")} rounds each reading {chunk.get("chunk_entries", 0):,}
more entries in every form, in an order rotated each round; CPU time per entry, median of the
rounds (range of the rounds in brackets). aiokafka's decode = its fetcher's work on a fetch
response's bytes (`PartitionRecords` over record batches of up to 16 KiB: CRC check, record
parse, `ConsumerRecord`), the fetch requests themselves not in it; `_apply` = the map's own
(JSON parse, what it keeps).

{READ_HEADER}
{chr(10).join(_read_rows(report))}

{notes}{flight}
Python {report["machine"]["python"]}, {report["machine"]["cores"]} cores shared with other work.
"""


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--before", type=Path, default=None, help="a source tree to compare")
    parser.add_argument("--before-name", default="the code before", help="what --before is")
    parser.add_argument("--skip-in-flight", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render", type=Path, help="only write memory.md from this JSON")
    parser.add_argument("--note", action="append", default=[], help="a finding, in the .md")
    args = parser.parse_args()
    if args.render is not None:
        (args.out / "memory.md").write_text(markdown(json.loads(args.render.read_text())))
        return 0
    report: dict[str, Any] = {
        "settings": {"entries": args.entries, "in_flight": IN_FLIGHT},
        "load_average_start": load_average(),
        "before": args.before_name if args.before is not None else None,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "notes": args.note,
    }
    # The code before (--before) measured right after this code, mode by mode: interleaved.
    for section, modes in (("maps", MAP_MODES), ("read", READ_MODES)):
        report[section] = {}
        for mode in modes:
            report[section][mode] = measure_map(mode, args.entries, None)
            if args.before is not None and not mode.startswith(("set", "dict_bytes")):
                before = report.setdefault(f"{section}_before", {})
                before[mode] = measure_map(mode, args.entries, args.before)
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
