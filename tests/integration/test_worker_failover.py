"""A worker killed with kill -9 while a second one of its group runs: how long its partitions
wait, and static membership (``worker.group_instance_id``) bringing them back to it without a
rebalance when it is restarted in time.

The test asserts what does not depend on timing: with static membership, the restarted worker
rejoins under its instance id and gets the very partitions it had, while the surviving member
keeps its member id and partitions and logs no revocation (no rebalance). The times are
measured by the manual mode (figures in docs/guarantees.md):

    .venv/bin/python -m tests.integration.test_worker_failover --runs 5 --session-timeout-s 10
    .venv/bin/python -m tests.integration.test_worker_failover --runs 5 --static --restart

``kill to resumed``: from the kill to the first result written for an event of the killed
worker's partitions (the survivor's, or the restarted worker's with --restart), with events
produced every 20 ms meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from schemas.codec import dumps
from schemas.config import KafkaSettings
from streams.kafka.connection import client_kwargs
from tests.support.ai_stack import AI_CONFIG, enriched
from tests.support.broker import free_port
from tests.support.stack import Proc, Stack, running_stack

PARTITIONS = 8
CUSTOMERS = 32
INSTANCE_ENV = "HOOKSTREAM_TEST_INSTANCE_ID"
JOINED_MARK = "Joined group"  # aiokafka's INFO line at each (re)join: one per rebalance


def failover_config(
    directory: Path,
    *,
    session_timeout_s: float,
    static: bool,
    heartbeat_interval_s: float | None = None,
) -> Path:
    """The AI stage's test flows with this session timeout (and heartbeat interval, if given),
    and with static membership the instance id from each process's own environment."""
    worker = f"worker:\n  session_timeout_s: {session_timeout_s}\n"
    if heartbeat_interval_s is not None:
        worker += f"  heartbeat_interval_s: {heartbeat_interval_s}\n"
    if static:
        worker += f"  group_instance_id: ${{{INSTANCE_ENV}}}\n"
    path = directory / "failover-flows.yaml"
    path.write_text(AI_CONFIG.replace("worker:\n", worker, 1))
    return path


@dataclass(frozen=True)
class Member:
    member_id: str  # <group.instance.id>-<uuid> for a static member, <client.id>-<uuid> else
    partitions: frozenset[int]

    @property
    def name(self) -> str:
        """The member id without its UUID: the instance id of a static member (aiokafka's
        DescribeGroups stops at v3, which does not return group.instance.id itself)."""
        return self.member_id.rsplit("-", 5)[0]


async def members(bootstrap: str, group: str, topic: str) -> list[Member]:
    """The group's members and the partitions of ``topic`` each holds (DescribeGroups)."""
    admin = AIOKafkaAdminClient(**client_kwargs(KafkaSettings(bootstrap_servers=bootstrap)))
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [described] = response.groups
    found = []
    for member in described[5]:  # (member_id, client_id, client_host, metadata, assignment)
        member_id, assignment = member[0], member[-1]
        decoded = ConsumerProtocolMemberAssignment.decode(assignment) if assignment else None
        partitions = frozenset(
            p
            for name, numbers in (decoded.assignment if decoded else [])
            if name == topic
            for p in numbers
        )
        found.append(Member(member_id, partitions))
    return found


async def settled(
    bootstrap: str, group: str, topic: str, count: int, timeout_s: float = 120
) -> list[Member]:
    """Wait until ``count`` members hold every partition of ``topic`` between them."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await members(bootstrap, group, topic)
        held = [m.partitions for m in found]
        if (
            len(found) == count
            and all(held)
            and frozenset().union(*held) == frozenset(range(PARTITIONS))
            and sum(len(h) for h in held) == PARTITIONS
        ):
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"group {group} did not settle on {count} members: {found}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def steady_load(bootstrap: str, topic: str, interval_s: float = 0.02) -> AsyncIterator[None]:
    """One event every ``interval_s``, customers in turn (so every partition gets events)."""
    producer = AIOKafkaProducer(
        **client_kwargs(KafkaSettings(bootstrap_servers=bootstrap)),
        acks="all",
        enable_idempotence=True,
    )
    await producer.start()

    async def feed() -> None:
        for n in itertools.count():
            record = enriched(f"cus-{n % CUSTOMERS}", f"Steady load item {n}.")
            await producer.send(topic, dumps(record), key=record.event.partitionkey.encode())
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(feed())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()


async def first_result_after(
    bootstrap: str, topic: str, partitions: frozenset[int], since_ms: float, timeout_s: float
) -> float:
    """Seconds from ``since_ms`` (wall clock) to the first record on ``partitions`` of
    ``topic`` stamped at or after it."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(KafkaSettings(bootstrap_servers=bootstrap)), enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            # A little before the end: results written just before the kill are skipped by
            # their timestamp, results written since are all seen.
            consumer.seek(tp, max(0, ends[tp] - 50))
        async with asyncio.timeout(timeout_s):
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                stamps = [r.timestamp for rs in batches.values() for r in rs]
                after = [s for s in stamps if s >= since_ms]
                if after:
                    return float(min(after) - since_ms) / 1000
    finally:
        await consumer.stop()


@dataclass
class Pair:
    stack: Stack
    first: Proc
    second: Proc
    group: str
    enriched: str
    results: str
    first_member_id: str  # worker-a's, from before worker-b joined


@contextlib.asynccontextmanager
async def two_workers(
    bootstrap: str,
    workdir: Path,
    *,
    session_timeout_s: float,
    static: bool,
    heartbeat_interval_s: float | None = None,
) -> AsyncIterator[Pair]:
    config = failover_config(
        workdir,
        session_timeout_s=session_timeout_s,
        static=static,
        heartbeat_interval_s=heartbeat_interval_s,
    )
    async with running_stack(
        bootstrap,
        workdir,
        config_path=config,
        roles=("worker",),
        extra_env={
            "HOOKSTREAM_TEST_N": "8",
            "HOOKSTREAM_TEST_PARTITIONS": str(PARTITIONS),
            INSTANCE_ENV: "worker-a",
        },
        ai_knobs={"latency_ms": 20, "jitter_ms": 10},
    ) as stack:
        first = stack.procs["worker"]
        group, topic = f"{stack.prefix}-worker", stack.topic("enriched")
        [alone] = await settled(bootstrap, group, topic, 1)
        second = Proc(
            name="worker-b",
            args=first.args,
            env={
                **stack.env,
                "HOOKSTREAM_STATE_DIR": str(workdir / "state-b"),
                "HOOKSTREAM_METRICS_PORT": str(free_port()),
                INSTANCE_ENV: "worker-b",
            },
            log_path=workdir / "worker-b.log",
        )
        stack.procs["worker-b"] = second  # stopped with the stack
        await second.start()
        yield Pair(
            stack,
            first,
            second,
            group=group,
            enriched=topic,
            results=stack.topic("results"),
            first_member_id=alone.member_id,
        )


async def test_a_static_member_restarted_in_time_gets_its_partitions_back_without_rebalance(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # Heartbeats every second, not every 12 s (a fifth of the session): worker-b's join waits
    # for worker-a's next heartbeat to tell it of the rebalance.
    async with two_workers(
        kafka_bootstrap, tmp_path, session_timeout_s=60, static=True, heartbeat_interval_s=1
    ) as pair:
        before = await settled(kafka_bootstrap, pair.group, pair.enriched, 2)
        by_instance = {m.name: m for m in before}
        assert set(by_instance) == {"worker-a", "worker-b"}  # the ids reached the group
        joins_before = pair.first.log_text().count(JOINED_MARK)
        async with steady_load(kafka_bootstrap, pair.enriched):
            assert await pair.second.stop(signal.SIGKILL) == -signal.SIGKILL
            await pair.second.start()
            # Its partitions are processed again: by the restarted worker, since the
            # survivor's assignment never changed (60 s session: no expiry meanwhile).
            await first_result_after(
                kafka_bootstrap,
                pair.results,
                by_instance["worker-b"].partitions,
                time.time() * 1000,
                timeout_s=60,
            )
        now = await members(kafka_bootstrap, pair.group, pair.enriched)
        after = {m.name: m for m in now}
        assert set(after) == {"worker-a", "worker-b"}
        assert after["worker-b"].partitions == by_instance["worker-b"].partitions
        assert after["worker-b"].member_id != by_instance["worker-b"].member_id  # a new process
        assert after["worker-a"] == by_instance["worker-a"]  # same member, same partitions
        assert pair.first.log_text().count(JOINED_MARK) == joins_before  # no rebalance


async def measure_once(
    bootstrap: str, workdir: Path, *, session_timeout_s: float, static: bool, restart: bool
) -> float:
    async with two_workers(
        bootstrap, workdir, session_timeout_s=session_timeout_s, static=static
    ) as pair:
        found = await settled(bootstrap, pair.group, pair.enriched, 2)
        [killed] = [m for m in found if m.member_id != pair.first_member_id]
        async with steady_load(bootstrap, pair.enriched):
            await asyncio.sleep(2)  # both busy (a manual measurement, not a test)
            killed_ms = time.time() * 1000
            await pair.second.stop(signal.SIGKILL)
            waiter = asyncio.create_task(
                first_result_after(bootstrap, pair.results, killed.partitions, killed_ms, 180)
            )
            if restart:
                await pair.second.start()
            return await waiter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--session-timeout-s", type=float, default=10.0)
    parser.add_argument("--static", action="store_true", help="worker.group_instance_id set")
    parser.add_argument("--restart", action="store_true", help="restart the killed worker")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    args = parser.parse_args()

    async def measure() -> list[float]:
        times = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="worker-failover-") as workdir:
                took = await measure_once(
                    args.bootstrap,
                    Path(workdir),
                    session_timeout_s=args.session_timeout_s,
                    static=args.static,
                    restart=args.restart,
                )
            print(f"kill to resumed: {took:.2f} s", flush=True)
            times.append(took)
        return times

    times = asyncio.run(measure())
    print(
        f"session_timeout_s={args.session_timeout_s} static={args.static} "
        f"restart={args.restart} runs={len(times)}: median {statistics.median(times):.2f} s, "
        f"min {min(times):.2f} s, max {max(times):.2f} s"
    )


if __name__ == "__main__":
    main()
