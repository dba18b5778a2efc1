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
each is compared; target: hookstream ≥ 0.5 x kcat.

Writes bench/results/replay.md and bench/results/replay.json.
Usage: python bench/replay/run.py [--events 100000] [--small 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
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
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from schemas.codec import dumps  # noqa: E402
from streams.client import make_event  # noqa: E402
from tests.support.stack import EXAMPLE_CONFIG, SECRETS  # noqa: E402

PARTITIONS, KEYS = 8, 1000
_REPLAY_LINE = re.compile(r"replayed ([\d,]+) .* in ([\d.]+) s \(([\d,]+) records/s\)")


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


async def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=n, num_partitions=PARTITIONS, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


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
            pending.append(await producer.send(topic, dumps(event), key=customer.encode()))
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


def run_kcat(kcat: str, bootstrap: str, source: str, target: str, t0: int, t1: int) -> float:
    """The pipe, timed start to exit; returns seconds."""
    consume = [
        kcat, "-C", "-b", bootstrap, "-t", source, "-o", f"s@{t0}", "-o", f"e@{t1}",
        "-e", "-q", "-f", "%k\\t%s\\n",
    ]  # fmt: skip
    produce = [
        kcat, "-P", "-b", bootstrap, "-t", target, "-K", "\t", "-H", "hookstream-replay=kcat",
        "-X", "enable.idempotence=true", "-X", "acks=all",
    ]  # fmt: skip
    started = time.perf_counter()
    reader = subprocess.Popen(consume, stdout=subprocess.PIPE)
    writer = subprocess.Popen(produce, stdin=reader.stdout)
    assert reader.stdout is not None
    reader.stdout.close()  # the writer holds the pipe; the reader gets SIGPIPE if it dies
    if writer.wait() != 0 or reader.wait() != 0:
        sys.exit(f"bench/replay: kcat pipe failed ({reader.returncode}, {writer.returncode})")
    return time.perf_counter() - started


def run_replay(env: dict[str, str], config: Path, t0: str, t1: str) -> tuple[float, float]:
    """``hookstream replay`` timed start to exit; returns (seconds, its own records/s)."""
    args = [
        sys.executable, "-m", "streams.cli", "replay", "-c", str(config), "--topic", "events",
        "--from", t0, "--to", t1, "--yes", "--no-progress",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"bench/replay: replay failed:\n{done.stdout}\n{done.stderr}")
    match = _REPLAY_LINE.search(done.stdout)
    if match is None:
        sys.exit(f"bench/replay: unexpected replay output:\n{done.stdout}")
    return elapsed, float(match.group(3).replace(",", ""))


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


async def copy_kcat(kcat: str, bootstrap: str, topics: tuple[str, str], window: Any) -> float:
    events, copies = topics
    before = await count_between(bootstrap, copies, 0, None)
    seconds = run_kcat(kcat, bootstrap, events, copies, window[0], window[1])
    copied = await count_between(bootstrap, copies, 0, None) - before
    if copied != window[2]:
        sys.exit(f"bench/replay: kcat copied {copied}, not {window[2]}")
    return seconds


async def copy_replay(
    bootstrap: str, events: str, env: dict[str, str], window: Any
) -> tuple[float, float]:
    mark = int(time.time() * 1000)
    seconds, own = run_replay(env, EXAMPLE_CONFIG, iso_ms(window[0]), iso_ms(window[1]))
    replayed = await count_between(bootstrap, events, mark, None)
    if replayed != window[2]:
        sys.exit(f"bench/replay: replay wrote {replayed}, not {window[2]}")
    return seconds, own


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000, help="the fixed-cost window")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    kcat = kcat_binary()
    kcat_version = kcat_version_of(kcat)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    topics = (f"{prefix}.events", f"{prefix}.kcat-copy")
    await create_topics(bootstrap, list(topics))
    print(f"producing {args.small:,} + {args.events:,} events to {topics[0]} ...", flush=True)
    small = (*await produce_window(bootstrap, topics[0], args.small), args.small)
    big = (*await produce_window(bootstrap, topics[0], args.events), args.events)
    env = {
        **os.environ,
        **SECRETS,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HOOKSTREAM_TOPIC_PREFIX": prefix,
    }
    times: dict[str, list[float]] = {"kcat": [], "kcat_small": [], "replay": [], "replay_small": []}
    replay_own: list[float] = []
    for round_no in range(1, args.rounds + 1):
        times["kcat_small"].append(await copy_kcat(kcat, bootstrap, topics, small))
        times["kcat"].append(await copy_kcat(kcat, bootstrap, topics, big))
        times["replay_small"].append((await copy_replay(bootstrap, topics[0], env, small))[0])
        seconds, own = await copy_replay(bootstrap, topics[0], env, big)
        times["replay"].append(seconds)
        replay_own.append(own)
        print(
            f"round {round_no}: kcat {times['kcat'][-1]:.2f} s ({times['kcat_small'][-1]:.2f} s "
            f"for {args.small:,}); hookstream replay {seconds:.2f} s "
            f"({times['replay_small'][-1]:.2f} s for {args.small:,}; own rate {own:,.0f}/s)",
            flush=True,
        )
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
        "target_ratio": 0.5,
    }
    results["steady_ratio"] = round(
        results["replay_steady_events_per_s"] / results["kcat_steady_events_per_s"], 3
    )
    results["target_met_whole_process"] = results["ratio"] >= results["target_ratio"]
    results["target_met_steady"] = results["steady_ratio"] >= results["target_ratio"]
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "replay.md").write_text(render(results))
    print(render(results))
    return 0


def _secs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def render(r: dict[str, Any]) -> str:
    s = r["seconds"]
    verdict = {True: "met", False: "missed"}
    return f"""# Replay benchmark

{r["events"]:,} CloudEvents ({r["event_bytes"]} bytes each) on {r["partitions"]} partitions, one \
local broker, 2 CPUs shared by the broker and both copiers. Both copy the same time window of the \
events topic: kcat as a consume → produce pipe into a second topic (keys kept, a static \
`hookstream-replay` header, idempotent producer, acks=all), `hookstream replay --yes` back into \
the events topic with its replay header (idempotent, acks=all). Each is timed as whole processes \
from start to exit, in {r["rounds"]} interleaved rounds; the best round of each is shown. Produced \
by `make bench-replay` (bench/replay/run.py).

| copier | events/s, whole process | events/s, steady | seconds for {r["events"]:,} | \
seconds for {r["small_window"]:,} |
|---|---:|---:|---|---|
| kcat {r["kcat_version"]} pipe | {r["kcat_events_per_s"]:,.0f} | \
{r["kcat_steady_events_per_s"]:,.0f} | {_secs(s["kcat"])} | {_secs(s["kcat_small"])} |
| `hookstream replay` | {r["replay_events_per_s"]:,.0f} | {r["replay_steady_events_per_s"]:,.0f} \
| {_secs(s["replay"])} | {_secs(s["replay_small"])} |

- **whole process** (what an operator waits for, interpreter start and config load included): \
hookstream / kcat = **{r["ratio"]:.3f}x**, target ≥ {r["target_ratio"]}x: \
{verdict[r["target_met_whole_process"]]}
- **steady** (fixed costs removed: ({r["events"]:,} - {r["small_window"]:,}) events / (time for \
{r["events"]:,} - time for {r["small_window"]:,})): hookstream / kcat = \
**{r["steady_ratio"]:.3f}x**: {verdict[r["target_met_steady"]]}
- the replay's own rate as it reports it (window fixed → last ack, no interpreter start): \
{r["replay_own_events_per_s"]:,.0f} events/s

## Where hookstream's time goes (profiled while building it)

- **Fixed cost, ~0.35 s of each run** (kcat: ~0.03 s): interpreter start and imports ~0.17 s, of
  which building the config's pydantic models (`schemas.config`) is ~0.12 s; reading and
  validating the YAML ~0.05 s; connecting, metadata and fixing the window ~0.02 s. For 100,000
  events this is about half the run, which is why the whole-process ratio misses 0.5x while the
  steady ratio does not; for larger windows the whole-process ratio tends to the steady one.
- **Per record, ~2-3 µs reading** (aiokafka builds a Python `ConsumerRecord` per record; ~60%
  of the copy) and ~1 µs writing (appending to a producer batch).
- Speedups made for this benchmark: records go straight into one producer batch per partition
  (`create_batch`/`send_batch`) instead of one `send()` and future per record (own rate 50,000 →
  ~210,000 events/s); `--yes` no longer parses every record for a cost estimate; fetches of
  1 MiB per partition instead of 8 MiB (records fetched past the window's end were all turned
  into objects: 0.3 s of a 1,000-event replay); no CRC check on read (librdkafka's default).
  Reading through per-partition `max_records` limits was tried and was slower (less prefetch).
- Later: each read asks for no more records than the window has left (a 1,000-record window
  had ~14,000 records past its end turned into objects: its own rate 6-10k → 11-14k events/s,
  whole process ~0.45 → ~0.35-0.4 s); consumer and producer connect at once, the window's
  offset look-ups run together; `config check` no longer imports aiokafka. Start-up is still
  ~0.3 s (interpreter, pydantic and the config models ~0.17-0.25 s; `defer_build` did not
  help, since loading the config builds every model anyway), so the whole-process ratio
  swings around 0.5x with the noise in kcat's time.
"""


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
