"""Benchmark: CPU per event of the worker and the sink worker against bare baselines (issue 16).

Each run pre-loads E events (8 partitions, 1,000 keys) and starts one consumer process on them:

- ``worker``: ``hookstream worker``, events → enriched → results, the model played by the AI
  simulator answering at once, flow ``max_concurrency`` 256;
- ``worker_lookup``: the same with one HTTP enrichment lookup (the CRM simulator);
- ``faust``: a bare Faust app, two pass-through agents over the same two hops, on asyncio's
  default loop (Faust's own default);
- ``faust_uvloop``: the same app on uvloop, the loop hookstream's worker and sinks run on;
- ``aiokafka``: a bare aiokafka consume → produce loop over the same two hops;
- ``sinks``: ``hookstream sinks`` on the worker's results, one HTTP sink (PUT to the CRM
  simulator, which accepts at once);
- ``put``: a bare aiokafka consume + aiohttp PUT loop on the same results;
- ``faust_put`` (``--only sinks``): the same PUTs from a bare Faust agent (Faust's floor).

The process's own CPU time (utime + stime from /proc/<pid>/stat; stime, the kernel's part,
reported as a share) and its output count are sampled every 0.25 s; CPU per event and events/s
come from the first sample with output to the last (start-up excluded). Ratios are taken
within a repetition, then the medians over the repetitions are reported. Writes
bench/results/pipeline.json and pipeline.md.

Usage: python bench/pipeline/run.py [--events 20000] [--repeat 3] [--profile-s 0]
[--code-from REV] (with ``--profile-s S`` and py-spy on PATH, the first worker run is also
sampled for S seconds, its samples written to bench/results/<name>-profile.raw, collapsed
stacks). With ``--code-from REV``, REV's worker (with and without the lookup) and sinks are
measured in every repetition too, each right before this code's (``worker_before``,
``worker_lookup_before``, ``sinks_before``; the first repetition's ``worker_before`` profiled to
``<name>-profile-before.raw``).

``--only worker`` runs the worker (no lookup; with ``--code-from``, REV's too, right before)
and the three bare baselines alone, for a change to the worker measured against its code before
in one session. ``--only lookup`` does the same for the worker with one HTTP lookup
(``worker_lookup``, and ``worker_lookup_before`` with ``--code-from``); default name
``pipeline-lookup``.

``--only sinks`` runs the sinks pair alone (a few minutes instead of ~15): the results topic is
pre-loaded with AI results (the worker's output, written directly), then ``sinks``,
``faust_put`` and ``put`` run on it; with ``--code-from REV`` the sinks process of REV's code
is measured too, in the same repetition (``sinks_before``; REV's ``agents``, ``schemas`` and
``streams`` unpacked from git), so that a change is measured against its code before in one
session, interleaved. With
``--profile-s`` the first repetition's sinks runs are sampled (``<name>-profile.raw``, and
``<name>-profile-before.raw`` for REV's). Written to bench/results/<name>.json,
.md (default name ``pipeline-sinks``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from schemas.codec import dumps  # noqa: E402
from schemas.config import KafkaSettings  # noqa: E402
from schemas.events import AIResult, CloudEvent  # noqa: E402
from streams.kafka.admin import create_topics  # noqa: E402
from tests.support.sims import running_ai_sim, running_crm_sim  # noqa: E402
from tests.support.stack import SECRETS, Proc  # noqa: E402

PARTITIONS, KEYS, N = 8, 1000, 256
MIN_EVENTS = 5_000  # several of the bare loops' batches, so their first and last outputs differ
ROLES = ("events", "enriched", "results", "dlq", "receipts")
HOPS = ("enriched", "results")
TICK_S = os.sysconf("SC_CLK_TCK")
RUNS = ("worker", "worker_lookup", "faust", "faust_uvloop", "aiokafka", "sinks", "put")
BEFORE_RUNS = ("worker_before", "worker_lookup_before", "sinks_before")
SINK_RUNS = ("sinks_before", "sinks", "faust_put", "put")


def _broker(setup: dict[str, Any]) -> str:
    """Which broker a run had: a fresh one (``make bench-pipeline`` starts one) or a shared one
    already holding other runs' topics (older results did not record it)."""
    held = setup.get("broker_topics_at_start")
    if held is None:
        return "a single-node broker (fresh or shared: not recorded)"
    if held == 0:
        return "a fresh single-node broker"
    return f"a shared single-node broker holding {held:,} other topics at the start"


def user_system_s(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid``, seconds: the interpreter's own work, and the kernel's for it
    (system calls: socket reads and writes, over loopback also the receiving side's TCP work)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK_S, int(fields[12]) / TICK_S


def config(lookup: bool) -> dict[str, Any]:
    flow: dict[str, Any] = {
        "name": "triage",
        "match": {"source": "helpdesk", "types": ["ticket.*"]},
        "ai": {
            "provider": "sim",
            "prompt": "{{ data.message }}",
            "output": {
                "type": "object",
                "properties": {
                    "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
                    "summary": {"type": "string"},
                },
                "required": ["sentiment", "summary"],
            },
            "max_concurrency": N,
        },
        "sinks": [
            {
                "name": "crm",
                "kind": "http",
                "method": "PUT",
                "url": "${HOOKSTREAM_CRM_URL}/customers/{{ data.customer_id }}",
                "body": {"last_feedback_sentiment": "{{ result.sentiment }}"},
            }
        ],
    }
    if lookup:
        flow["enrich"] = [
            {"name": "customer", "url": "${HOOKSTREAM_CRM_URL}/customers/{{ data.customer_id }}"}
        ]
    return {
        "version": 1,
        "kafka": {
            "bootstrap_servers": "${KAFKA_BOOTSTRAP_SERVERS}",
            "topic_prefix": "${HOOKSTREAM_TOPIC_PREFIX}",
            "partitions": PARTITIONS,
        },
        "worker": {
            "allow_private_networks": True,
            "commit_interval_s": 0.5,
            "sink_concurrency": N,
        },
        "sources": [
            {
                "name": "helpdesk",
                "signature": {"scheme": "none"},
                "id_field": "id",
                "type_field": "event",
                "partition_key": "customer_id",
            }
        ],
        "providers": [
            {
                "name": "sim",
                "kind": "openai",
                "base_url": "${HOOKSTREAM_AI_BASE_URL}",
                "model": "sim-1",
                "timeout_s": 10,
            }
        ],
        "flows": [flow],
    }


async def preload(bootstrap: str, prefix: str, events: int, *, results: bool = False) -> None:
    """``events`` CloudEvents on ``<prefix>.events``; with ``results``, the AI results the
    worker would make of them on ``<prefix>.results`` instead (the sinks' input)."""
    await create_topics(
        KafkaSettings(bootstrap_servers=bootstrap),
        {f"{prefix}.{role}": {} for role in ROLES},
        partitions=PARTITIONS,
    )
    rng = random.Random(events)  # noqa: S311 - a benchmark's keys, not crypto
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        for index in range(events):
            customer = f"cus_{rng.randrange(1, KEYS + 1):04d}"
            event = CloudEvent(
                id=f"ev-{prefix}-{index}",
                source="helpdesk",
                type="ticket.created",
                time=datetime.now(UTC),
                data={"customer_id": customer, "message": f"Bench {index}: export broken."},
                partitionkey=customer,
                traceid=uuid.uuid4().hex,
            )
            if results:
                result = AIResult(
                    flow="triage",
                    event=event,
                    provider="sim",
                    model="sim-1",
                    output={"sentiment": "negative", "summary": f"Bench {index}."},
                    latency_ms=1.0,
                    attempts=1,
                )
                # as the worker writes it: with its trace's context in a header
                parent = f"00-{event.traceid}-{uuid.uuid4().hex[:16]}-01".encode()
                await producer.send(
                    f"{prefix}.results",
                    dumps(result),
                    key=customer.encode(),
                    headers=[("traceparent", parent)],
                )
            else:
                await producer.send(f"{prefix}.events", dumps(event), key=customer.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def topic_count(consumer: AIOKafkaConsumer, topic: str) -> int:
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return sum((await consumer.end_offsets(tps)).values())


async def measure(
    pid: int, count: Callable[[], Awaitable[float]], events: int, timeout_s: float
) -> dict[str, Any]:
    """Sample (wall, cpu, progress) until ``events`` are through; the figures between the
    first sample with output and the last (the process's start-up left out)."""
    first: tuple[float, float, float, float] | None = None
    deadline = time.monotonic() + timeout_s
    while True:
        done = await count()
        now, (user, system) = time.monotonic(), user_system_s(pid)
        cpu = user + system
        if first is None and done > 0:
            first = (now, cpu, done, system)
        if done >= events and first is not None:
            break
        if now > deadline:
            raise TimeoutError(f"only {done} of {events} outputs after {timeout_s} s")
        await asyncio.sleep(0.25)
    wall_s, used_s, counted = now - first[0], cpu - first[1], done - first[2]
    counted = max(counted, 1.0)
    return {
        "events": round(counted),
        "events_per_s": round(counted / max(wall_s, 1e-3), 1),
        "cpu_us_per_event": round(used_s / counted * 1e6, 1),
        "cpu_share": round(used_s / max(wall_s, 1e-3), 2),
        "system_share": round((system - first[3]) / max(used_s, 1e-6), 2),
    }


class Bench:
    def __init__(
        self, bootstrap: str, workdir: Path, events: int, ai_url: str, crm_url: str, name: str
    ) -> None:
        self.bootstrap, self.workdir, self.events = bootstrap, workdir, events
        self.ai_url, self.crm_url = ai_url, crm_url
        self.counter = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        self.name = name
        self._sessions: list[Any] = []

    def env(self, prefix: str, code: Path | None = None) -> dict[str, str]:
        """A hookstream process's environment; ``code``: where its packages are imported
        from (PYTHONSAFEPATH keeps ``-m`` from putting the work tree first)."""
        where = {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(code)} if code is not None else {}
        return {
            **os.environ,
            **where,
            **SECRETS,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "HOOKSTREAM_TOPIC_PREFIX": prefix,
            "HOOKSTREAM_AI_BASE_URL": self.ai_url,
            "HOOKSTREAM_CRM_URL": self.crm_url,
            "HOOKSTREAM_STATE_DIR": str(self.workdir / f"state-{prefix}"),
        }

    def progress(self, prefix: str) -> Callable[[], Awaitable[float]]:
        """Events through both hops: the mean of the enriched and the results counts, so
        that the first hop's work, which runs ahead of the second, is counted as it is done."""

        async def count() -> float:
            hops = [topic_count(self.counter, f"{prefix}.{role}") for role in HOPS]
            return sum(await asyncio.gather(*hops)) / len(HOPS)

        return count

    async def hookstream(
        self,
        role: str,
        prefix: str,
        lookup: bool,
        count: Callable[[], Awaitable[float]],
        profile_s: float = 0.0,
        code: Path | None = None,
        profile_name: str = "profile",
    ) -> tuple[dict[str, Any], Proc]:
        """One hookstream process measured; with ``profile_s``, py-spy samples it from its
        first output for that long (bench/results/<name>-profile.raw, collapsed stacks)."""
        path = self.workdir / f"flows-{prefix}-{lookup}.yaml"
        path.write_text(yaml.safe_dump(config(lookup), sort_keys=False))
        proc = Proc(
            role,
            [role, "-c", str(path), "-l", "info"],
            self.env(prefix, code),
            self.workdir / f"{role}-{prefix}.log",
        )
        await proc.start(ready_timeout_s=180)
        assert proc.process is not None
        spy = None
        if profile_s:
            while not await count():  # noqa: ASYNC110 - polling Kafka, no event to wait on
                await asyncio.sleep(0.1)
            spy = await asyncio.create_subprocess_exec(
                *("py-spy", "record", "-p", str(proc.process.pid), "-d", str(int(profile_s))),
                *(
                    "-f",
                    "raw",
                    "-o",
                    str(RESULTS / f"{self.name}-{profile_name}.raw"),
                    "--nonblocking",
                ),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        measured = await self._measured(proc.process, count)
        if spy is not None:
            await spy.wait()
        return measured, proc

    async def _measured(
        self, process: Any, count: Callable[[], Awaitable[float]]
    ) -> dict[str, Any]:
        return await measure(process.pid, count, self.events, timeout_s=self.events / 20 + 300)

    async def baseline(self, mode: str, prefix: str, count: Callable[[], Awaitable[float]]) -> Any:
        log = (self.workdir / f"{mode}-{prefix}.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("baselines.py")),
            mode.replace("_", "-"),
            prefix,
            self.bootstrap,
            self.crm_url,
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        try:
            return await self._measured(process, count)
        finally:
            await stop(process)
            log.close()

    async def records_written(self, prefix: str) -> dict[str, float]:
        """Records the worker wrote per event (its stopped run's): enriched and results, and
        those of its two memories (dedupe marks, answer-cache entries)."""
        counts = {
            role: await topic_count(self.counter, f"{prefix}.{role}")
            for role in ("enriched", "results", "dedupe", "ai-cache")
        }
        return {
            "records_per_event": round(sum(counts.values()) / self.events, 2),
            "memory_records_per_event": round(
                (counts["dedupe"] + counts["ai-cache"]) / self.events, 2
            ),
        }

    async def crm_count(self) -> Callable[[], Awaitable[float]]:
        import aiohttp

        session = aiohttp.ClientSession()
        async with session.get(f"{self.crm_url}/_sim/stats") as response:
            base = int((await response.json())["updates"])

        async def count() -> float:
            async with session.get(f"{self.crm_url}/_sim/stats") as response:
                return int((await response.json())["updates"]) - base

        self._sessions.append(session)
        return count

    async def repetition(
        self, profile_s: float, before: Path | None, only: str | None = None
    ) -> dict[str, Any]:
        """Every run once; with ``before``, that code's worker, worker with a lookup and sinks
        each right before this code's (the sinks read the results of their own code's worker).
        ``only``: "worker" (no lookup) or "lookup" (one HTTP lookup), that worker and the bare
        baselines alone (the first worker run of each code profiled with ``profile_s``)."""
        out: dict[str, Any] = {}
        codes: list[tuple[str, Path | None]] = [("", None)]
        if before is not None:
            codes.insert(0, ("_before", before))
        sink_prefixes: dict[str, str] = {}
        worker_only = only is not None
        lookups = {"worker": (False,), "lookup": (True,)}.get(only or "", (False, True))
        for lookup in lookups:
            for suffix, code in codes:
                name = ("worker_lookup" if lookup else "worker") + suffix
                prefix = f"p{uuid.uuid4().hex[:8]}"
                await preload(self.bootstrap, prefix, self.events)
                print(f"{name} ...", flush=True)
                measured, proc = await self.hookstream(
                    "worker",
                    prefix,
                    lookup,
                    self.progress(prefix),
                    profile_s if lookup == lookups[0] else 0.0,
                    code,
                    "profile" + suffix.replace("_", "-"),
                )
                out[name] = measured
                await proc.stop()
                out[name].update(await self.records_written(prefix))
                if not lookup:
                    sink_prefixes[suffix] = prefix  # the sinks read this run's results
        for mode in ("faust", "faust_uvloop", "aiokafka"):
            prefix = f"p{uuid.uuid4().hex[:8]}"
            await preload(self.bootstrap, prefix, self.events)
            print(f"{mode} ...", flush=True)
            out[mode] = await self.baseline(mode, prefix, self.progress(prefix))
        for suffix, code in codes if not worker_only else ():
            print(f"sinks{suffix} ...", flush=True)
            measured, proc = await self.hookstream(
                "sinks", sink_prefixes[suffix], False, await self.crm_count(), code=code
            )
            out["sinks" + suffix] = measured
            await proc.stop()
        if not worker_only:
            print("put ...", flush=True)
            out["put"] = await self.baseline("put", sink_prefixes[""], await self.crm_count())
        for session in self._sessions:
            await session.close()
        self._sessions.clear()
        for name, value in out.items():
            print(f"  {name}: {value}", flush=True)
        return out

    async def sinks_repetition(self, profile_s: float, before: Path | None) -> dict[str, Any]:
        """The sinks pair alone, on pre-loaded results; with ``before``, that code's sinks
        process too, first (each run reads results of its own: the delivered-memory and the
        consumer group are per prefix)."""
        out: dict[str, Any] = {}
        runs: list[tuple[str, Path | None]] = [("sinks", None)]
        if before is not None:
            runs.insert(0, ("sinks_before", before))
        for name, code in runs:
            prefix = f"p{uuid.uuid4().hex[:8]}"
            await preload(self.bootstrap, prefix, self.events, results=True)
            print(f"{name} ...", flush=True)
            measured, proc = await self.hookstream(
                "sinks",
                prefix,
                False,
                await self.crm_count(),
                profile_s,
                code,
                "profile" if name == "sinks" else "profile-before",
            )
            out[name] = measured
            await proc.stop()
        for mode in ("faust_put", "put"):  # on the last run's results: its own group each
            print(f"{mode} ...", flush=True)
            out[mode] = await self.baseline(mode, prefix, await self.crm_count())
        for session in self._sessions:
            await session.close()
        self._sessions.clear()
        for name, value in out.items():
            print(f"  {name}: {value}", flush=True)
        return out


def code_tree(revision: str, work: Path) -> tuple[Path, str]:
    """hookstream's ``agents``, ``schemas`` and ``streams`` as of ``revision``, unpacked under
    ``work``, and the commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = work / f"code-{commit[:12]}"
    target.mkdir(exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "agents", "schemas", "streams"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target, commit


async def stop(process: Any) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


def sink_ratios(rep: dict[str, Any]) -> dict[str, float]:
    cpu = {name: rep[name]["cpu_us_per_event"] for name in SINK_RUNS if name in rep}
    out = {
        "sinks_vs_put": round(cpu["sinks"] / cpu["put"], 2),
        "sinks_vs_faust_put": round(cpu["sinks"] / cpu["faust_put"], 2),
        "faust_put_vs_put": round(cpu["faust_put"] / cpu["put"], 2),
    }
    if "sinks_before" in cpu:
        out["sinks_before_vs_put"] = round(cpu["sinks_before"] / cpu["put"], 2)
        out["sinks_vs_sinks_before"] = round(cpu["sinks"] / cpu["sinks_before"], 2)
    return out


def ratios(rep: dict[str, Any]) -> dict[str, float]:
    cpu = {name: rep[name]["cpu_us_per_event"] for name in (*RUNS, *BEFORE_RUNS) if name in rep}
    out: dict[str, float] = {}
    if "worker" in cpu:  # not with --only lookup
        out["worker_vs_faust"] = round(cpu["worker"] / cpu["faust"], 2)
        out["worker_vs_faust_uvloop"] = round(cpu["worker"] / cpu["faust_uvloop"], 2)
        out["worker_vs_aiokafka"] = round(cpu["worker"] / cpu["aiokafka"], 1)
    out["faust_vs_aiokafka"] = round(cpu["faust"] / cpu["aiokafka"], 1)
    out["faust_uvloop_vs_faust"] = round(cpu["faust_uvloop"] / cpu["faust"], 2)
    if "worker_lookup" in cpu:  # not with --only worker
        out["worker_lookup_vs_faust"] = round(cpu["worker_lookup"] / cpu["faust"], 2)
        out["worker_lookup_vs_faust_uvloop"] = round(cpu["worker_lookup"] / cpu["faust_uvloop"], 2)
        out["worker_lookup_vs_aiokafka"] = round(cpu["worker_lookup"] / cpu["aiokafka"], 1)
    if "sinks" in cpu:
        out["sinks_vs_put"] = round(cpu["sinks"] / cpu["put"], 2)
    for name in BEFORE_RUNS:
        if name in cpu:
            now = name.removesuffix("_before")
            out[f"{now}_vs_{name}"] = round(cpu[now] / cpu[name], 2)
    if "worker_before" in cpu:
        out["worker_before_vs_faust"] = round(cpu["worker_before"] / cpu["faust"], 2)
        out["worker_before_vs_faust_uvloop"] = round(cpu["worker_before"] / cpu["faust_uvloop"], 2)
    if "worker_lookup_before" in cpu:
        lookup_before = cpu["worker_lookup_before"]
        out["worker_lookup_before_vs_faust"] = round(lookup_before / cpu["faust"], 2)
        out["worker_lookup_before_vs_faust_uvloop"] = round(lookup_before / cpu["faust_uvloop"], 2)
    if "sinks_before" in cpu:
        out["sinks_before_vs_put"] = round(cpu["sinks_before"] / cpu["put"], 2)
    return out


def rerender(name: str) -> None:
    """bench/results/<name>.md written again from its .json (after a change to render)."""
    report = json.loads((RESULTS / f"{name}.json").read_text())
    (RESULTS / f"{name}.md").write_text(render(report))


def median_of(reps: list[dict[str, Any]], path: tuple[str, ...]) -> float:
    values = []
    for rep in reps:
        value: Any = rep
        for part in path:
            value = value[part]
        values.append(float(value))
    return round(statistics.median(values), 2)


LABELS = {
    "worker": "hookstream worker, no lookup",
    "worker_lookup": "hookstream worker, one HTTP lookup",
    "faust": "bare Faust app, two pass-through agents (asyncio's loop, Faust's default)",
    "faust_uvloop": "bare Faust app, two pass-through agents, on uvloop",
    "aiokafka": "bare aiokafka consume → produce loop, same two hops",
    "sinks": "hookstream sinks, one HTTP sink (PUT)",
    "put": "bare aiokafka consume + aiohttp PUT loop",
    "sinks_before": "hookstream sinks, the code before (--code-from)",
    "faust_put": "bare Faust agent, the same PUT (64 concurrent actors)",
    "worker_before": "hookstream worker, no lookup, the code before (--code-from)",
    "worker_lookup_before": "hookstream worker, one HTTP lookup, the code before (--code-from)",
}


def render_sinks(report: dict[str, Any]) -> str:
    s, med = report["setup"], report["median"]
    names = [name for name in SINK_RUNS if name in med]
    rows = [
        f"| {LABELS[name]} | {med[name]['events_per_s']:,} | {med[name]['cpu_us_per_event']:,} "
        f"| {med[name]['cpu_share']} | {med[name].get('system_share', '-')} |"
        for name in names
    ]
    before = f" (the code before: {s['code_from']})" if "code_from" in s else ""
    return "\n".join(
        [
            "# Pipeline benchmark, the sinks pair: CPU per event",
            "",
            f"`bench/pipeline/run.py --only sinks`: {s['events']:,} AI results pre-loaded over "
            f"{KEYS:,} keys on {PARTITIONS} partitions per run, {s['repeat']} repetitions, "
            f"medians{before}; the CRM simulator accepts at once; {_broker(s)}; "
            f"{s['cpus']} CPUs shared by the broker, the simulator and the process measured; "
            f"Python {s['python']}. CPU is the measured process's own (utime + stime), from its "
            "first output to its last.",
            "",
            "| run | events/s | CPU per event (µs) | cores busy | share of the CPU in the kernel |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            "Ratios of CPU per event (medians of each repetition's ratio):",
            "",
            *(f"- {k}: **{v}x**" for k, v in med["ratios"].items()),
            "",
        ]
    )


def render(report: dict[str, Any]) -> str:
    s, med = report["setup"], report["median"]
    names = [name for name in (*BEFORE_RUNS, *RUNS) if name in med]
    rows = [
        f"| {LABELS[name]} | {med[name]['events_per_s']:,} | {med[name]['cpu_us_per_event']:,} "
        f"| {med[name]['cpu_share']} | {med[name].get('system_share', '-')} |"
        for name in names
    ]
    r = med["ratios"]
    before = [
        f"- {LABELS[name.removesuffix('_before')]}: this code / the code before, "
        f"{s['code_from']}: **{r[name.removesuffix('_before') + '_vs_' + name]}x**"
        for name in BEFORE_RUNS
        if name in med
    ]
    if "worker_before" in med:
        sinks_before = (
            f", sinks / bare consume + PUT loop {r['sinks_before_vs_put']}x"
            if "sinks_before_vs_put" in r
            else ""
        )
        before += [
            f"- the code before: worker / bare Faust {r['worker_before_vs_faust']}x, / bare "
            f"Faust on uvloop {r['worker_before_vs_faust_uvloop']}x{sinks_before}"
        ]
    if "worker_lookup_before" in med:
        before += [
            f"- the code before: worker with a lookup / bare Faust "
            f"{r['worker_lookup_before_vs_faust']}x, / bare Faust on uvloop "
            f"{r['worker_lookup_before_vs_faust_uvloop']}x"
        ]
    lookup = (
        [
            f"- worker with a lookup / bare Faust: **{r['worker_lookup_vs_faust']}x** (target "
            f"≤ 1.5x); / bare Faust on uvloop: {r['worker_lookup_vs_faust_uvloop']}x; / bare "
            f"aiokafka loop: {r['worker_lookup_vs_aiokafka']}x"
        ]
        if "worker_lookup_vs_faust" in r
        else []
    )
    worker = (
        [
            f"- worker / bare Faust on asyncio's loop (Faust's default): "
            f"**{r['worker_vs_faust']}x** (target ≤ 1.5x); / bare Faust on uvloop (the loop the "
            f"worker runs on): **{r['worker_vs_faust_uvloop']}x**; / bare aiokafka loop: "
            f"{r['worker_vs_aiokafka']}x"
        ]
        if "worker_vs_faust" in r
        else []
    )
    sinks = (
        [f"- sinks / bare consume + PUT loop: **{r['sinks_vs_put']}x** (target ≤ 1.5x)"]
        if "sinks_vs_put" in r
        else []
    )
    records = [
        f"- records {LABELS[name]} wrote per event (enriched, results, dedupe, ai-cache): "
        f"{med[name]['records_per_event']}, of them its two memories' "
        f"{med[name]['memory_records_per_event']}"
        for name in ("worker_before", "worker", "worker_lookup_before", "worker_lookup")
        if "records_per_event" in med.get(name, {})
    ]
    return "\n".join(
        [
            "# Pipeline benchmark: CPU per event",
            "",
            f"`make bench-pipeline` (bench/pipeline/run.py): {s['events']:,} pre-loaded events "
            f"over {KEYS:,} keys on {PARTITIONS} partitions per run, {s['repeat']} repetitions, "
            "medians; the model and the CRM are the bundled simulators answering at once; flow "
            f"`max_concurrency` {N}; {_broker(s)}; {s['cpus']} CPUs shared by the "
            f"broker, the simulators and the process measured; Python {s['python']}. CPU is the "
            "measured process's own (utime + stime), from its first output to its last.",
            *(["", f"Runs: {s['note']}."] if "note" in s else []),
            "",
            "| run | events/s | CPU per event (µs) | cores busy | share of the CPU in the kernel |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            "Ratios of CPU per event (medians of each repetition's ratio):",
            "",
            *worker,
            *lookup,
            f"- bare Faust / bare aiokafka loop: {r['faust_vs_aiokafka']}x; bare Faust on uvloop "
            f"/ on asyncio's loop: {r['faust_uvloop_vs_faust']}x",
            *sinks,
            *before,
            *records,
            "",
        ]
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile-s", type=float, default=0.0)
    parser.add_argument("--name", default=None)
    parser.add_argument("--only", choices=["sinks", "worker", "lookup"], default=None)
    parser.add_argument(
        "--code-from", default=None, help="REV's worker and sinks measured too, interleaved"
    )
    parser.add_argument("--note", default=None, help="a sentence on how the runs were made")
    args = parser.parse_args()
    if args.events < MIN_EVENTS:
        # The bare loops read up to 2,000 records per getmany: fewer events end in one batch,
        # with nothing between the first output and the last to measure.
        parser.error(f"--events must be at least {MIN_EVENTS:,} (got {args.events:,})")
    sinks_only = args.only == "sinks"
    default_name = {"sinks": "pipeline-sinks", "lookup": "pipeline-lookup"}
    args.name = args.name or default_name.get(args.only or "", "pipeline")
    runs = SINK_RUNS if sinks_only else (*BEFORE_RUNS, *RUNS)
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    if args.profile_s and shutil.which("py-spy") is None:
        raise SystemExit("bench: --profile-s needs py-spy on PATH")
    reps: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hookstream-pipeline-") as tmp:
        before, commit = code_tree(args.code_from, Path(tmp)) if args.code_from else (None, None)
        async with running_ai_sim() as ai, running_crm_sim(seed_customers=KEYS) as crm:
            bench = Bench(bootstrap, Path(tmp), args.events, ai.base_url, crm.base_url, args.name)
            await bench.counter.start()
            # A fresh broker (make bench-pipeline) holds none; a shared one says so here.
            topics_at_start = len(await bench.counter.topics())
            try:
                for index in range(args.repeat):
                    profile_s = args.profile_s if index == 0 else 0.0
                    if sinks_only:
                        rep = await bench.sinks_repetition(profile_s, before)
                        rep["ratios"] = sink_ratios(rep)
                    else:
                        rep = await bench.repetition(profile_s, before, args.only)
                        rep["ratios"] = ratios(rep)
                    print(f"  ratios: {rep['ratios']}", flush=True)
                    reps.append(rep)
            finally:
                await bench.counter.stop()
    median: dict[str, Any] = {
        name: {k: median_of(reps, (name, k)) for k in reps[0][name]}
        for name in runs
        if name in reps[0]
    }
    median["ratios"] = {k: median_of(reps, ("ratios", k)) for k in reps[0]["ratios"]}
    report = {
        "setup": {
            "events": args.events,
            "repeat": args.repeat,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "max_concurrency": N,
            "broker_topics_at_start": topics_at_start,
            **({"code_from": f"{args.code_from} ({commit})"} if commit else {}),
            **({"note": args.note} if args.note else {}),
        },
        "median": median,
        "repetitions": reps,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render_sinks(report) if sinks_only else render(report)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
