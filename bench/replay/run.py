"""Benchmark: ``hookstream replay`` vs a kcat consume→produce pipe over the same window.

100,000 CloudEvents (the gateway's envelope, ~450 bytes each, keyed by customer over 8
partitions) are produced to an events topic, after a first window of 1,000; the time window
around each is noted. Then, in interleaved rounds, each copier copies each window:

- kcat: ``kcat -C -o s@T0 -o e@T1 -f '%k\\t%s\\n' | kcat -P -K '\\t' -H hookstream-replay=kcat``
  into a second topic (idempotent producer, acks=all: what hookstream's replay uses), keys kept;
- hookstream: ``hookstream replay --topic events --from T0 --to T1 --yes``, the operator's
  command, writing back to the events topic with its replay header, as a replay does.

Both are timed as whole processes, start to exit (the pipe exits once its producer has
flushed), and each run's output is counted on the broker. Two figures per copier: whole
process (events / seconds for the 100,000) and steady (99,000 / the difference between the two
windows' times, which removes start-up, connection and config costs from both). The best round of
each is compared; target (issue 16): hookstream ≥ 1.0 x kcat, whole process. Also timed: each
replay's first line of output (the cost line on stderr), from spawn: with ``--yes`` it comes once
the window has been read (the copy makes the estimate from its own reads).

With ``--tree LABEL=DIR`` (repeatable) the replay of each other tree's code (e.g. a copy of the
code before a change: ``git archive <commit> | tar -x -C DIR``) runs the same windows in the same
rounds, beside this checkout's, and is reported beside it.

Writes bench/results/replay.md and bench/results/replay.json.
Usage: python bench/replay/run.py [--events 100000] [--small 1000] [--rounds 3]
                                  [--tree LABEL=DIR ...]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from schemas.codec import dumps  # noqa: E402
from schemas.config import KafkaSettings  # noqa: E402
from streams.client import make_event  # noqa: E402
from streams.kafka.admin import create_topics  # noqa: E402
from tests.support.stack import EXAMPLE_CONFIG, SECRETS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor import (  # noqa: E402
    copy_loop_cpu_s,
    fetched_batches,
    interpreter_s,
    run_least_copy,
)

PARTITIONS, KEYS = 8, 1000
_REPLAY_LINE = re.compile(r"replayed ([\d,]+) .* in ([\d.]+) s \(([\d,]+) records/s\)")


PACKAGES = ("schemas", "streams", "agents")


def compile_hookstream(root: Path = ROOT) -> list[Path]:
    """Byte-compile hookstream's own modules, as ``pip install`` leaves an installed package
    (the Docker image's, say): with ``PYTHONDONTWRITEBYTECODE=1`` set, as in the Dockerfile
    and in the environment this was built in, a source checkout recompiles the ~15 modules a
    replay imports at every start (~20 ms). Returns the .pyc files it created, to remove."""
    before = {p for package in PACKAGES for p in (root / package).rglob("*.pyc")}
    for package in PACKAGES:
        compileall.compile_dir(root / package, quiet=1)
    return sorted({p for package in PACKAGES for p in (root / package).rglob("*.pyc")} - before)


def remove_compiled(created: list[Path]) -> None:
    """Leave the source tree as the benchmark found it."""
    for path in created:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the folder is not empty: it was there before
            path.parent.rmdir()


def kcat_binary() -> str:
    """kcat (or its old name kafkacat); installed with apt-get when missing and possible."""
    for name in ("kcat", "kafkacat"):
        found = shutil.which(name)
        if found:
            return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        sys.exit(
            "bench/replay: kcat is not installed (apt-get install kcat) and I cannot install it"
        )
    print("bench/replay: installing kcat with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([apt, "update", "-qq"], check=True, env=env)
    subprocess.run(
        [apt, "install", "-y", "-qq", "--no-install-recommends", "kcat"], check=True, env=env
    )
    found = shutil.which("kcat")
    if found is None:
        sys.exit("bench/replay: apt-get installed no kcat binary")
    return found


def kcat_version_of(kcat: str) -> str:
    """``1.7.1 (librdkafka 2.0.2)`` from kcat's -V banner."""
    banner = subprocess.run([kcat, "-V"], capture_output=True, text=True, check=False).stdout
    kcat_v = re.search(r"Version (\S+)", banner)
    librdkafka = re.search(r"librdkafka (\S+)", banner)
    kcat_text = kcat_v.group(1) if kcat_v else "?"
    return f"{kcat_text} (librdkafka {librdkafka.group(1) if librdkafka else '?'})"


def bench_event(n: int, customer: str) -> bytes:
    """The window's ``n``-th event (no record headers: the replay adds only its own)."""
    event = make_event(
        {
            "event": "ticket.created",
            "ticket_id": f"T-{n}",
            "customer_id": customer,
            "message": f"Bench message {n}: the export to CSV times out after 30 s.",
        },
        source="helpdesk",
        type="ticket.created",
        key=customer,
        id=f"bench-{n}",
    )
    return dumps(event)


async def produce_events(bootstrap: str, topic: str, count: int) -> None:
    rng = random.Random(count)  # noqa: S311 - a benchmark's keys, not crypto
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    try:
        pending = []
        for n in range(count):
            customer = f"cus_{rng.randrange(KEYS):04d}"
            event = bench_event(n, customer)
            pending.append(await producer.send(topic, event, key=customer.encode()))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def count_between(bootstrap: str, topic: str, start_ms: int, end_ms: int | None) -> int:
    """Records of ``topic`` with start_ms ≤ timestamp < end_ms (end_ms None: to the end)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: start_ms for tp in tps})
        stops = (
            await consumer.offsets_for_times({tp: end_ms for tp in tps})
            if end_ms is not None
            else {}
        )
        total = 0
        for tp in tps:
            first = starts[tp].offset if starts.get(tp) else ends[tp]
            stop = stops.get(tp)
            last = stop.offset if stop else ends[tp]
            total += max(0, last - first)
        return total
    finally:
        await consumer.stop()


def children_cpu_s() -> float:
    """CPU seconds (user + system) of every child process this one has waited for: a run's
    CPU is the difference across it (both kcat processes, or the replay's interpreter). Less
    sensitive than the wall clock to what else runs on the machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_kcat(
    kcat: str, bootstrap: str, source: str, target: str, t0: int, t1: int
) -> tuple[float, float]:
    """The pipe, timed start to exit; returns (seconds, CPU seconds of both processes)."""
    consume = [
        kcat, "-C", "-b", bootstrap, "-t", source, "-o", f"s@{t0}", "-o", f"e@{t1}",
        "-e", "-q", "-f", "%k\\t%s\\n",
    ]  # fmt: skip
    produce = [
        kcat, "-P", "-b", bootstrap, "-t", target, "-K", "\t", "-H", "hookstream-replay=kcat",
        "-X", "enable.idempotence=true", "-X", "acks=all",
    ]  # fmt: skip
    cpu_before = children_cpu_s()
    started = time.perf_counter()
    reader = subprocess.Popen(consume, stdout=subprocess.PIPE)
    writer = subprocess.Popen(produce, stdin=reader.stdout)
    assert reader.stdout is not None
    reader.stdout.close()  # the writer holds the pipe; the reader gets SIGPIPE if it dies
    if writer.wait() != 0 or reader.wait() != 0:
        sys.exit(f"bench/replay: kcat pipe failed ({reader.returncode}, {writer.returncode})")
    return time.perf_counter() - started, children_cpu_s() - cpu_before


def run_replay(
    env: dict[str, str], tree: Path, t0: str, t1: str
) -> tuple[float, float, float, float]:
    """``hookstream replay`` of ``tree``'s code, timed start to exit; returns (seconds, seconds
    to its first line of output, its own records/s, its CPU seconds)."""
    args = [
        sys.executable, "-m", "streams.cli.main", "replay", "-c", str(EXAMPLE_CONFIG),
        "--topic", "events", "--from", t0, "--to", t1, "--yes", "--no-progress",
    ]  # fmt: skip
    env = {**env, "PYTHONPATH": str(tree)}
    cpu_before = children_cpu_s()
    started = time.perf_counter()
    process = subprocess.Popen(
        args, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    first_line = process.stderr.readline()  # the cost line, or the first of an error
    first_s = time.perf_counter() - started
    stdout, stderr = process.communicate()
    elapsed = time.perf_counter() - started
    cpu_s = children_cpu_s() - cpu_before
    if process.returncode != 0:
        sys.exit(f"bench/replay: replay in {tree} failed:\n{stdout}\n{first_line}{stderr}")
    match = _REPLAY_LINE.search(stdout)
    if match is None:
        sys.exit(f"bench/replay: unexpected replay output:\n{stdout}")
    return elapsed, first_s, float(match.group(3).replace(",", "")), cpu_s


def iso_ms(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat(timespec="milliseconds")


async def produce_window(bootstrap: str, topic: str, count: int) -> tuple[int, int]:
    """Produce ``count`` events; return the [t0, t1) ms window holding exactly them."""
    t0 = int(time.time() * 1000) - 1
    await produce_events(bootstrap, topic, count)
    await asyncio.sleep(0.01)
    t1 = int(time.time() * 1000) + 1
    await asyncio.sleep(0.01)
    window = await count_between(bootstrap, topic, t0, t1)
    if window != count:
        sys.exit(f"bench/replay: the window holds {window} records, not {count}")
    return t0, t1


async def copy_kcat(
    kcat: str, bootstrap: str, topics: tuple[str, str], window: Any
) -> tuple[float, float]:
    events, copies = topics
    before = await count_between(bootstrap, copies, 0, None)
    seconds, cpu_s = run_kcat(kcat, bootstrap, events, copies, window[0], window[1])
    copied = await count_between(bootstrap, copies, 0, None) - before
    if copied != window[2]:
        sys.exit(f"bench/replay: kcat copied {copied}, not {window[2]}")
    return seconds, cpu_s


async def copy_replay(
    bootstrap: str, events: str, env: dict[str, str], window: Any, tree: Path = ROOT
) -> tuple[float, float, float, float]:
    mark = int(time.time() * 1000)
    run = run_replay(env, tree, iso_ms(window[0]), iso_ms(window[1]))
    replayed = await count_between(bootstrap, events, mark, None)
    if replayed != window[2]:
        sys.exit(f"bench/replay: replay wrote {replayed}, not {window[2]}")
    return run


def tree_arg(text: str) -> tuple[str, Path]:
    """``LABEL=DIR``: a tree of hookstream's code to replay with, beside this checkout."""
    label, _, folder = text.partition("=")
    path = Path(folder).resolve()
    if not label or not (path / "streams" / "cli" / "main.py").is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=DIR, DIR holding hookstream")
    return label, path


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000, help="the fixed-cost window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tree", type=tree_arg, action="append", default=[], help="LABEL=DIR: other code too"
    )
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    kcat = kcat_binary()
    kcat_version = kcat_version_of(kcat)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topics = (f"{prefix}.events", f"{prefix}.kcat-copy")
    await create_topics(
        KafkaSettings(bootstrap_servers=bootstrap),
        {name: {} for name in topics},
        partitions=PARTITIONS,
    )
    print(f"producing {args.small:,} + {args.events:,} events to {topics[0]} ...", flush=True)
    small = (*await produce_window(bootstrap, topics[0], args.small), args.small)
    big = (*await produce_window(bootstrap, topics[0], args.events), args.events)
    env = {
        **os.environ,
        **SECRETS,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HOOKSTREAM_TOPIC_PREFIX": prefix,
    }
    trees: list[tuple[str, Path]] = [("replay", ROOT), *args.tree]
    times: dict[str, list[float]] = {"kcat": [], "kcat_small": [], "kcat_cpu": []}
    for label, _ in trees:
        for suffix in ("", "_small", "_first_output", "_small_first_output", "_cpu"):
            times[label + suffix] = []
    replay_own: list[float] = []
    for name in (
        "floor_interpreter",
        "floor_interpreter_cpu",
        "floor_copy_loop_cpu",
        "least_copier",
        "least_copier_cpu",
    ):
        times[name] = []
    fetched = fetched_batches(args.events, bench_event(0, "cus_0000"), b"cus_0000")
    compiled = [pyc for _, tree in trees for pyc in compile_hookstream(tree)]
    try:
        for round_no in range(1, args.rounds + 1):
            times["kcat_small"].append((await copy_kcat(kcat, bootstrap, topics, small))[0])
            seconds, cpu_s = await copy_kcat(kcat, bootstrap, topics, big)
            times["kcat"].append(seconds)
            times["kcat_cpu"].append(cpu_s)
            said = [f"round {round_no}: kcat {times['kcat'][-1]:.2f} s, CPU {cpu_s:.2f} s "
                    f"({times['kcat_small'][-1]:.2f} s for {args.small:,})"]  # fmt: skip
            for label, tree in trees:
                seconds, first_s, _, _ = await copy_replay(bootstrap, topics[0], env, small, tree)
                times[label + "_small"].append(seconds)
                times[label + "_small_first_output"].append(first_s)
                seconds, first_s, own, cpu_s = await copy_replay(
                    bootstrap, topics[0], env, big, tree
                )
                times[label].append(seconds)
                times[label + "_first_output"].append(first_s)
                times[label + "_cpu"].append(cpu_s)
                if label == "replay":
                    replay_own.append(own)
                said.append(
                    f"{'hookstream replay' if label == 'replay' else label} {seconds:.2f} s, "
                    f"CPU {cpu_s:.2f} s ({times[label + '_small'][-1]:.2f} s for {args.small:,}, "
                    f"first output {times[label + '_small_first_output'][-1]:.2f} s; "
                    f"own rate {own:,.0f}/s)"
                )
            wall_s, cpu_s = interpreter_s()
            times["floor_interpreter"].append(wall_s)
            times["floor_interpreter_cpu"].append(cpu_s)
            loop_s, copied = copy_loop_cpu_s(fetched)
            if copied != args.events:
                sys.exit(f"bench/replay: the floor copied {copied}, not {args.events}")
            times["floor_copy_loop_cpu"].append(loop_s)
            said.append(f"floor: interpreter {wall_s:.2f} s + copy loop {loop_s:.2f} s of CPU")
            wall_s, cpu_s, copied = run_least_copy(bootstrap, topics[0], topics[1], *big[:2])
            if copied != args.events:
                sys.exit(f"bench/replay: the least copier copied {copied}, not {args.events}")
            times["least_copier"].append(wall_s)
            times["least_copier_cpu"].append(cpu_s)
            said.append(f"least copier {wall_s:.2f} s, CPU {cpu_s:.2f} s")
            print("; ".join(said), flush=True)
    finally:
        remove_compiled(compiled)
    best = {name: min(values) for name, values in times.items()}
    steady = args.events - args.small
    results: dict[str, Any] = {
        "events": args.events,
        "small_window": args.small,
        "partitions": PARTITIONS,
        "event_bytes": len(dumps(make_event({"x": "y" * 150}, source="s", type="t"))),
        "kcat_version": kcat_version,
        "rounds": args.rounds,
        "seconds": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "kcat_events_per_s": round(args.events / best["kcat"], 1),
        "replay_events_per_s": round(args.events / best["replay"], 1),
        "ratio": round(best["kcat"] / best["replay"], 3),
        "kcat_steady_events_per_s": round(steady / (best["kcat"] - best["kcat_small"]), 1),
        "replay_steady_events_per_s": round(steady / (best["replay"] - best["replay_small"]), 1),
        "replay_own_events_per_s": round(max(replay_own), 1),
        "replay_small_first_output_s": round(best["replay_small_first_output"], 3),
        # CPU (user + system) of the copier's processes for the large window, median of the
        # rounds; the ratio kcat / hookstream, as for the times.
        "kcat_cpu_s": round(statistics.median(times["kcat_cpu"]), 3),
        "replay_cpu_s": round(statistics.median(times["replay_cpu"]), 3),
        "target_ratio": 1.0,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "trees": {
            label: {
                "path": str(tree),
                "ratio": round(best["kcat"] / best[label], 3),
                "steady_ratio": round(
                    (steady / (best[label] - best[label + "_small"]))
                    / (steady / (best["kcat"] - best["kcat_small"])),
                    3,
                ),
                "small_first_output_s": round(best[label + "_small_first_output"], 3),
                "cpu_s": round(statistics.median(times[label + "_cpu"]), 3),
            }
            for label, tree in args.tree
        },
    }
    results["steady_ratio"] = round(
        results["replay_steady_events_per_s"] / results["kcat_steady_events_per_s"], 3
    )
    results["cpu_ratio"] = round(results["kcat_cpu_s"] / results["replay_cpu_s"], 3)
    results["ratio_per_round"] = [
        round(k / h, 3) for k, h in zip(times["kcat"], times["replay"], strict=True)
    ]
    results["target_met_whole_process"] = results["ratio"] >= results["target_ratio"]
    # The floor (bench/replay/floor.py): best interpreter start with the clients' imports plus
    # the best copy loop alone; kcat's best whole run against it.
    results["floor_s"] = round(best["floor_interpreter"] + best["floor_copy_loop_cpu"], 3)
    results["floor_interpreter_s"] = round(best["floor_interpreter"], 3)
    results["floor_copy_loop_cpu_s"] = round(best["floor_copy_loop_cpu"], 3)
    results["kcat_over_floor"] = round(best["kcat"] / results["floor_s"], 3)
    results["least_copier_s"] = round(best["least_copier"], 3)
    results["least_copier_cpu_s"] = round(statistics.median(times["least_copier_cpu"]), 3)
    results["kcat_over_least_copier"] = round(best["kcat"] / best["least_copier"], 3)
    results["target_met_steady"] = results["steady_ratio"] >= results["target_ratio"]
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "replay.md").write_text(render(results))
    print(render(results))
    return 0


def _secs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _tree_rows(r: dict[str, Any]) -> str:
    """A row per ``--tree``: the same windows replayed by other code, in the same rounds."""
    s, rows = r["seconds"], []
    for label in r["trees"]:
        whole = r["events"] / min(s[label])
        steady = (r["events"] - r["small_window"]) / (min(s[label]) - min(s[label + "_small"]))
        rows.append(
            f"| `hookstream replay`, {label} | {whole:,.0f} | {steady:,.0f} | "
            f"{_secs(s[label])} | {_secs(s[label + '_small'])} |"
        )
    return "\n".join(rows)


def _tree_notes(r: dict[str, Any]) -> str:
    return "".join(
        f"; {label}: {t['small_first_output_s']:.3f} s (whole process {t['ratio']:.3f}x, steady "
        f"{t['steady_ratio']:.3f}x)"
        for label, t in r["trees"].items()
    )


def _cpu_notes(r: dict[str, Any]) -> str:
    return "".join(
        f"; {label}: {t['cpu_s']:.2f} s ({r['kcat_cpu_s'] / t['cpu_s']:.3f}x)"
        for label, t in r["trees"].items()
    )


def render(r: dict[str, Any]) -> str:
    s = r["seconds"]
    verdict = {True: "met", False: "missed"}
    return f"""# Replay benchmark

{r["events"]:,} CloudEvents ({r["event_bytes"]} bytes each) on {r["partitions"]} partitions, one \
local broker, 2 CPUs shared by the broker and both copiers. Both copy the same time window of the \
events topic: kcat as a consume → produce pipe into a second topic (keys kept, a static \
`hookstream-replay` header, idempotent producer, acks=all), `hookstream replay --yes` back into \
the events topic with its replay header (idempotent, acks=all). Each is timed as whole processes \
from start to exit, in {r["rounds"]} interleaved rounds; the best round of each is shown. \
hookstream's modules are compiled to bytecode first, as `pip install` leaves them. Produced by \
`make bench-replay` (bench/replay/run.py).

| copier | events/s, whole process | events/s, steady | seconds for {r["events"]:,} | \
seconds for {r["small_window"]:,} |
|---|---:|---:|---|---|
| kcat {r["kcat_version"]} pipe | {r["kcat_events_per_s"]:,.0f} | \
{r["kcat_steady_events_per_s"]:,.0f} | {_secs(s["kcat"])} | {_secs(s["kcat_small"])} |
| `hookstream replay` | {r["replay_events_per_s"]:,.0f} | {r["replay_steady_events_per_s"]:,.0f} \
| {_secs(s["replay"])} | {_secs(s["replay_small"])} |
{_tree_rows(r)}

- **whole process** (what an operator waits for, interpreter start and config load included): \
hookstream / kcat = **{r["ratio"]:.3f}x**, target ≥ {r["target_ratio"]}x: \
{verdict[r["target_met_whole_process"]]} (round by round: \
{", ".join(f"{x:.2f}x" for x in r["ratio_per_round"])})
- **steady** (fixed costs removed: ({r["events"]:,} - {r["small_window"]:,}) events / (time for \
{r["events"]:,} - time for {r["small_window"]:,})): hookstream / kcat = \
**{r["steady_ratio"]:.3f}x**: {verdict[r["target_met_steady"]]}
- **CPU** (user + system) of the copier's processes for the {r["events"]:,}, median of the \
rounds (what the machine's load changes least): kcat {r["kcat_cpu_s"]:.2f} s, hookstream \
{r["replay_cpu_s"]:.2f} s: kcat / hookstream = **{r["cpu_ratio"]:.3f}x**{_cpu_notes(r)}
- the replay's own rate as it reports it (window fixed → last ack, no interpreter start): \
{r["replay_own_events_per_s"]:,.0f} events/s
- first line of output (the cost line, on stderr; since session 12 it comes once a `--yes` \
replay has read its window) of the {r["small_window"]:,}-event replay, from spawn: \
{r["replay_small_first_output_s"]:.3f} s (best round; rounds: \
{_secs(s["replay_small_first_output"])}){_tree_notes(r)}
- **the floor** of any replay in this stack (bench/replay/floor.py, same rounds, best round \
of each): a Python process importing asyncio, aiokafka and pydantic, \
{r["floor_interpreter_s"]:.3f} s from spawn to exit, plus the copy loop alone (each record \
decoded from batches already fetched and rebuilt with the replay header by aiokafka's C \
record classes: no fetch, write, ack, filter or pricing), {r["floor_copy_loop_cpu_s"]:.3f} s \
of CPU for {r["events"]:,}: {r["floor_s"]:.3f} s, against kcat's whole best round \
{min(s["kcat"]):.3f} s: kcat / floor = **{r["kcat_over_floor"]:.3f}x**; and the least copier \
(the same file: the replay's copy as a whole process, with none of its config, filter, \
estimate or pricing), {r["least_copier_s"]:.3f} s at best ({_secs(s["least_copier"])}), CPU \
{r["least_copier_cpu_s"]:.2f} s (median of the rounds): kcat / least copier = \
**{r["kcat_over_least_copier"]:.3f}x**. The floor leaves \
{max(0.0, min(s["kcat"]) - r["floor_s"]):.3f} s of kcat's best round for connecting and for \
fetching and writing the window with acks=all; the least copier is what this stack does with \
them, and its gap to `hookstream replay` is the replay's own work (config, filter, estimate \
and pricing)
- load average (1, 5, 15 min) at the end of the run: \
{", ".join(f"{x:.2f}" for x in r["load_average"])}

## Where hookstream's time goes (measured while building it)

- **Session 13 (issue 16): two changes tried, neither kept.** (1) A replay without `--batch`
  validates no answer, so it could load the config without checking the flows' output schemas
  and never import jsonschema: ~40 ms of CPU. Not kept: a replay would then accept a config
  that the worker refuses at start, and a bad config must fail where it is loaded. (2) With
  `--yes`, the pricer prepared each sampled task (event validated, request rendered) while the
  copy waited for the broker, 64 tasks per turn of the event loop. With (1), in 3 runs of 5
  rounds against 2da881b at load 1-4: whole process 0.41-0.48x kcat (before 0.42-0.47x), CPU
  0.68-0.78 s (before 0.68-0.84 s), median rounds 0.85-0.88 s instead of 0.96-0.99 s at load
  1-3. (2) alone, 3 rounds at load 3.5: CPU 1.06 s against 0.87 s for the code before, whole
  process 0.40x. It moves work, it does not remove it: on a quiet machine the replay is
  CPU-bound (best round 0.76-0.79 s for 0.68-0.78 s of CPU; kcat 0.33-0.36 s for 0.34-0.41 s
  of its two processes). Reverted. What is left is CPU: start-up to the fixed window 0.25-0.3 s
  (interpreter and the CLI's parser ~0.08 s, pydantic and the config models ~0.1 s, aiokafka
  ~0.03 s, the pricer's imports ~0.04 s), the copy ~0.3 s, the pricing ~0.1 s. An estimate made
  by a second process, on the second core, is the next thing to try.
- **Session 12 (issue 16)**, beside the code before it (`--tree before=`, commit 0389f49, same
  rounds), on a machine loaded by three other engineers' test runs (load average 5-7.7):
  `replay --yes` reads its window once. The estimate's sample (10 slices of each partition)
  was read on its own before the copy, and with this window's 512 KiB producer batches it
  fetched about every batch of the window a first time; now the copy keeps the records of the
  same slices as it copies them (`streams/ops/replay_sample.py`) and prices them once the window
  has been read, while the last batches wait for their acks. The estimate is the same (the same
  records priced, a record in two overlapping slices twice: tests/unit/streams/ops/
  test_replay_sample.py, and `estimate()` against the one pass on the broker in
  tests/integration/test_replay_copy.py); the cost line now comes after the copy's read, so a
  window of more than 1,000,000 records (`ONE_PASS_MAX`) is still estimated first. Phases of a
  100,000-event replay (CPU, then wall, from spawn; instrumented copies of both trees, bytecode
  compiled, 2 rounds each at load ~3): before, start-up to the window fixed 0.32-0.33 s, the
  sample read 0.13-0.17 s (0.26-0.35 s wall), its pricing with the results topic's read
  0.11-0.12 s (0.17-0.18 s), the copy 0.20-0.21 s (0.31 s), exit 0.02-0.03 s: 0.83 s of CPU,
  1.29-1.34 s; now, start-up 0.31-0.43 s, the copy with the sample 0.24 s (0.35-0.39 s), the
  pricing 0.11 s (0.12-0.13 s; the acks are in by its end), exit 0.02 s: 0.69-0.81 s of CPU,
  0.89-1.01 s. Three bench runs: whole process 0.761x kcat (before 0.708x; 3 rounds, load 5.0),
  0.385x (0.354x; load 7.7) and 0.458x (0.328x; load 7.0), the process's CPU 0.79, 0.74 and
  0.81 s (before 0.79, 0.86 and 0.89 s; median of the rounds); 10 interleaved rounds of the
  100,000 alone (load 4-6): CPU 0.726 s instead of 0.804 (median), best time 1.19 s instead of
  1.38. Looked at, not done: forwarding whole fetched batches unchanged (each record gains the
  replay header, so its length, the batch's CRC, and the idempotent producer's id and sequence
  numbers must be rebuilt: the C record builder already does that at ~0.5 µs a record); pricing
  each task as it is read (an events task with an earlier result is priced again with it, so a
  replay of events the worker has seen would price twice). Also made: without `--yes`, a
  window the estimate reads whole (up to 10,000 records) is kept, up to 64 MiB of keys and
  values (`KEPT_BYTES_MAX`), and copied after the answer without being fetched again: for
  10,000 events the copy used 23 ms of CPU instead of 39 (median of 8 interleaved,
  in-process, load 5.5); a larger window's sample is read, the question asked, then the window
  read whole. What is left is start-up, 0.3-0.4 s of CPU before the window is fixed
  (instrumented at load ~6): Python and the CLI's parser 0.09-0.11 s, the replay's and the
  config models' imports 0.23-0.28 s (jsonschema, which the config's output schemas and the AI
  stage's output validators need, and pydantic each ~0.05-0.07 s), the config and the pricer
  ~0.06 s; then the pricing (~0.11 s) after the read.
- **Session 11 (issue 16)**, beside the code before it (`--tree before=`, commit 9a7d866, same
  rounds) in four runs on a machine loaded by three other engineers' test runs (load average
  4.6-8.9: the times vary up to 2x from round to round, the CPU figures by ~10 %): a
  100,000-event replay's process used 0.77-0.83 s of CPU (median of 5 rounds) instead of
  0.86-0.93 s, kcat's two processes 0.33-0.40 s; best rounds at load 4.6-4.9, 0.86-0.93 s
  instead of 0.92-1.15 s (kcat 0.34-0.36 s). Changes: the produce requests are encoded with one
  copy of their record batches instead of six (`streams/kafka/produce_encoding.py`, byte for
  byte aiokafka's encoding: 12 requests of 4 x 1 MiB took 60 ms of CPU instead of 120, page
  faults of the fresh buffers included; in the replay, 19 requests of 2.4 MB on average,
  ~0.02-0.03 s); the estimate prices a task in ~9.4 µs instead of ~16.2 (the same 10,000 events,
  best of 3: an empty answer cache is not asked and no cache key is computed, only the priced
  model's request is rendered, a call's dollars are computed once per token shape, the sample
  loop's lookups hoisted); building the parser no longer imports the config models (the batcher
  command imported them at the top of its module), so they load inside the replay's GC-off
  start-up again. What is left, per 100,000-event run at low load: imports ~0.23 s of CPU
  (pydantic and the config models with jsonschema, which the config's output schemas need, ~0.14
  s; aiokafka ~0.03 s; prometheus_client ~0.014 s for the AI task's metric children), the
  estimate ~0.23 s (its 10 slices fetch ~60 MB: with this window's 512 KiB producer batches each
  slice needs one or two whole batches of every partition, so the sample reads about every batch
  of the 45 MB window; pricing ~0.1 s: validating each event 3.7 µs, the enriched event 1.7 µs,
  rendering the request 3.7 µs), the copy ~0.22 s (reading: asyncio's StreamReader and
  aiokafka's decoder copy each byte ~3 times). Tried, no consistent gain (measured under that
  load): aiokafka's reader limit at 1 MiB instead of 64 KiB (fewer pauses of the socket), the GC
  off for the whole run, the slices read by 2 or 5 consumers at once. 1.0x is out of reach for a
  Python process that validates the config and prices a sample before it copies: kcat's whole
  run is 0.3 s, this one's imports alone 0.23 s.
- **Session 9 (issue 16)**, beside the code before it (`--tree before=`, commit ce6c358, same
  rounds): a 100,000-event replay's ~0.85 s at low load is start-up ~0.32 s (to the cost
  line of a 1,000-event replay), the cost estimate ~0.3 s (its 10,000-record sample read in 10
  slices, ~0.12-0.19 s of CPU; 10,000 tasks priced at ~17.5 µs each, ~0.175 s: prompt
  rendering, cache key, pydantic) and the copy ~0.25 s (its own rate 360,000-450,000
  events/s, at kcat's steady rate or above). Changes: the pricer no longer imports aiohttp
  (`agents.ai.task` imports the model clients in `ProviderRuntime.build`, at the worker's
  start): 607 → 518 modules, `python -X importtime` total 351 → 268 ms (median of 5
  interleaved, 1,000-event replay); with `--yes` the copy's consumer and producers connect
  and learn the leaders while the estimate runs; the answer cache is read and the results
  topic's consumer connects while the window is read. Tried, no gain: the sample's slices
  read by 5 consumers at once (the read is CPU-bound); the cyclic GC off during the estimate.
- **What is left to 1.0x is the estimate**: with `PRICED_MAX` 1,000 instead of 10,000
  (measured in one run, 3 rounds) the 100,000 took 0.62-0.63 s instead of 0.83-0.90 s
  (0.434x whole process, 0.871x steady). Copying while the estimate runs (with `--yes`)
  would hide most of it. Both change what the replay does (the estimate's sample; the cost
  line printed before anything is written): left to the issue.
- **Start-up, ~0.2 s of each run** (session 7; kcat: ~0.03 s; ~0.3 s before). CPU per part,
  in-process, best of 12, bytecode compiled: interpreter and site 22 ms, asyncio 20 ms,
  pydantic 59 ms (+3 ms for its plugin scan), the config's models 20 ms, PyYAML 10 ms,
  aiokafka 22 ms, hookstream's CLI and replay modules ~10 ms (plus orjson's imports, which
  pydantic would make anyway), argparse 6 ms, loading and validating the file 2 ms;
  connecting (consumer and two producers), metadata and fixing the window ~10-15 ms; exit
  ~4 ms.
- **Per record**, the copy is ~0.5 µs of Python and C (decode from the fetched batch, append
  to the producer's batch); the rest is per byte in aiokafka: request encoding (`b"".join`
  per level of the produce request) and response decoding (`bytearray.extend`,
  `readexactly`, `BytesIO.read`) copy each byte several times, ~0.1 s of CPU for these
  45 MB, plus the kernel's loopback copies.
- Made in this round (each measured against the step before, same machine and broker):
  records are copied from the fetched record batches straight into the producer batch's C
  record builder (no `ConsumerRecord`, no `BatchBuilder.append` wrapper): ~2.8 → ~0.5 µs of
  CPU per record in isolation, a 100,000-event replay's process 0.74 → 0.54 s of CPU; two
  idempotent producers, each owning half of the partitions (aiokafka keeps one produce
  request in flight per connection): whole process 0.81 → 0.64 s (median of 10); the YAML
  parsed once, by libyaml: 14 → 1.6 ms; the CLI imports pydantic and aiokafka in the
  commands and runs its imports and the config load with the cyclic GC off, then freezes
  what they built (the GC ran ~100 times over it, ~12 ms, and again at exit): a 1,000-event
  replay 274 → 237 ms (median of 15); fetches start at 64 KiB per partition and double to
  1 MiB: a 1,000-event window read 8 MiB in its first fetch (its copy 48 → 20 ms); the
  producers learn the topic's leaders while the window is fixed; a result the fetcher
  buffered for a partition already finished is dropped (it held every fetch to the broker
  back for up to 100 ms); the benchmark compiles hookstream's modules to bytecode first, as
  `pip install` does (~20 ms a run).
- Over 14 runs of this state the whole-process ratio was 0.50-0.76x (before: 0.40-0.54x), the
  last four 0.53-0.63x: hookstream's best round 0.44-0.62 s, kcat's 0.27-0.47 s, both with
  the load of the two shared CPUs; past start-up the copy runs at 0.85-1.3x kcat's rate.
- Tried, did not help: `defer_build` on the config models (import 12 ms less, load 10 ms more);
  two consumers (two fetches in flight: more CPU, same time); fetches of 2-4 MiB per
  partition (more CPU: bigger buffers to copy); yielding to the event loop after each fetch
  so the next one leaves sooner (no faster); uvloop for the replay (no faster, 6 ms more
  to import); one producer with 2 MiB requests, or four
  producers (no better than two); a GC threshold raised instead of the GC off (its full
  passes still cost ~8 ms); a copy loop specialised for unfiltered replays (~3 ms per
  100,000).
- Earlier rounds: one producer batch per partition via `create_batch`/`send_batch` instead of
  a `send()` and future per record (own rate 50,000 → ~210,000 events/s); no CRC check on
  read (librdkafka's default).
- Since session 7 a replay of the events topic first prints its cost line (issue 17), also
  with `--yes`: it reads the window, renders each flow's prompt for the answer cache's keys
  and reads the earlier results' token usage, before the copy starts. That, and importing
  the AI stage's code to do it, is most of the gap to kcat below; issue 16 is where the
  replay's speed is to be won back (e.g. estimating from a sample of the window).
"""


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
