"""A broker outage under load adds no copies of a stage's output (issue 12).

A stage that timed out on a write used to write the record again while the first write was
still held by the producer, which delivered it once the broker came back: one result ended up
on the results topic four times. Now a stage waits on its original write (see agents/emit.py)
and only writes again once the producer gave that write up.

The test starts its own broker (scripts/kafka, own state directory and ports), runs the
gateway and the worker on it, posts webhooks, kills the broker with SIGKILL mid-load, starts it
again on the same data and waits until every event on the events topic has its result or its
dead letter. Then no event has two results or two dead letters.

The gateway's side is measured, not asserted: a webhook answered 503 may still be on the
events topic (its write landed after the deadline; documented in docs/guarantees.md). Run this
module as a script for the figures on a bigger load:

    .venv/bin/python -m tests.integration.test_outage_copies --webhooks 600 --outage-s 18
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import broker as broker_support
from tests.support.broker import PrivateBroker, private_broker
from tests.support.kafka import read_all
from tests.support.stack import Stack, running_stack

SENDERS = 8


@dataclass
class OutageCounts:
    """What one outage run left on Kafka, per event id."""

    accepted: int = 0
    refused_503: int = 0
    results: collections.Counter[str] = field(default_factory=collections.Counter)
    dead_letters: collections.Counter[str] = field(default_factory=collections.Counter)
    late_writes: int = 0  # webhooks answered 503 whose event is on the events topic anyway
    events: int = 0
    drained: bool = False

    @property
    def duplicated_results(self) -> dict[str, int]:
        return {k: n for k, n in self.results.items() if n > 1}

    @property
    def duplicated_dead_letters(self) -> dict[str, int]:
        return {k: n for k, n in self.dead_letters.items() if n > 1}

    def summary(self) -> str:
        return (
            f"accepted={self.accepted} refused_503={self.refused_503} events={self.events} "
            f"late_writes={self.late_writes} results={sum(self.results.values())} "
            f"(ids {len(self.results)}, duplicated {len(self.duplicated_results)}, "
            f"max copies {max(self.results.values(), default=0)}) "
            f"dead_letters={sum(self.dead_letters.values())} "
            f"(ids {len(self.dead_letters)}, duplicated {len(self.duplicated_dead_letters)}, "
            f"max copies {max(self.dead_letters.values(), default=0)}) drained={self.drained}"
        )


def kill_broker(broker: PrivateBroker) -> None:
    """SIGKILL the broker process: no clean shutdown, as when a machine dies."""
    os.kill(broker.pid, signal.SIGKILL)


def feedback(customer: str, text: str) -> dict[str, Any]:
    return {"event": "ticket.created", "customer_id": customer, "message": text}


async def _event_ids(stack: Stack, role: str) -> set[str]:
    """The ids of the webhooks whose stage output (a result, a dead letter) is on ``role``."""
    return {r.json()["event"]["id"] for r in await read_all(stack.bootstrap, stack.topic(role))}


async def _drained(stack: Stack, counts: OutageCounts) -> bool:
    """Every event on the events topic has a result or a dead letter (then nothing is pending)."""
    events = {r.json()["id"] for r in await read_all(stack.bootstrap, stack.topic("events"))}
    results = await _event_ids(stack, "results")
    letters = await _event_ids(stack, "dlq")
    counts.events = len(events)
    return bool(events) and events <= results | letters


async def run_outage(
    workdir: Path,
    *,
    webhooks: int,
    outage_s: float,
    drain_timeout_s: float = 120.0,
    session_timeout_ms: int | None = None,
) -> OutageCounts:
    """Post ``webhooks`` webhooks; kill -9 the broker after a third of them for ``outage_s``.

    ``session_timeout_ms``: the broker's (tests.support.broker.PrivateBroker); the restarted
    broker serves once its killed incarnation is fenced, that long after its start."""
    counts = OutageCounts()
    refused: set[str] = set()
    async with (
        private_broker(workdir / "broker", session_timeout_ms=session_timeout_ms) as broker,
        running_stack(
            broker.bootstrap,
            workdir,
            roles=("gateway", "worker"),
            extra_env={"HOOKSTREAM_PRODUCE_TIMEOUT_S": "2"},
            # Half the model answers are malformed: an event whose answer and re-ask both are
            # is dead-lettered, so both the results topic and the DLQ get writes in the outage.
            ai_knobs={"rate_malformed": 0.5},
        ) as stack,
    ):
        posted = 0
        third_accepted = asyncio.Event()
        down = asyncio.Event()
        up_again = asyncio.Event()

        async def sender(index: int) -> None:
            nonlocal posted
            while posted < webhooks:
                posted += 1
                webhook_id = f"wh-{uuid.uuid4().hex}"
                text = f"Order {webhook_id} from sender {index} has not arrived."
                status, answer, _ = await stack.post(
                    "helpdesk", feedback(f"cus_{index:03d}", text), webhook_id=webhook_id
                )
                if status == 503:
                    counts.refused_503 += 1
                    refused.add(webhook_id)
                    await asyncio.sleep(0.05)
                else:
                    assert status == 202, answer
                    counts.accepted += 1
                    if counts.accepted >= webhooks // 3:
                        third_accepted.set()
                if down.is_set() and not up_again.is_set():
                    await asyncio.sleep(0.1)  # the outage should not use up the webhooks

        senders = [asyncio.create_task(sender(i)) for i in range(SENDERS)]
        try:
            await third_accepted.wait()
            kill_broker(broker)
            down.set()
            await asyncio.sleep(outage_s)  # the outage itself: its length is what is tested
            await broker.start(keep_data=True)
            up_again.set()
            await asyncio.gather(*senders)
        finally:
            for task in senders:
                task.cancel()
        deadline = time.monotonic() + drain_timeout_s
        while time.monotonic() < deadline:
            if await _drained(stack, counts):
                counts.drained = True
                break
            await asyncio.sleep(1.0)
        for record in await read_all(stack.bootstrap, stack.topic("results")):
            counts.results[record.json()["event"]["id"]] += 1
        for record in await read_all(stack.bootstrap, stack.topic("dlq")):
            counts.dead_letters[record.json()["event"]["id"]] += 1
        on_topic = {r.json()["id"] for r in await read_all(stack.bootstrap, stack.topic("events"))}
        counts.late_writes = len(refused & on_topic)
        # Killed, not stopped: what they wrote is counted above, and a worker told to stop
        # right after the drain sometimes waited in Faust's "Wait for streams..." until the
        # stack's kill 30 s later (2 of 6 runs; not what this test is about).
        for proc in stack.procs.values():
            await proc.stop(signal.SIGKILL)
    return counts


@pytest.mark.asyncio
async def test_a_broker_outage_writes_no_result_or_dead_letter_twice(tmp_path: Path) -> None:
    # A 3 s broker session, not 9: the outage is the 12 s asked for, not 12 s plus the
    # restarted broker's wait for its killed incarnation to be fenced.
    counts = await run_outage(tmp_path, webhooks=240, outage_s=12, session_timeout_ms=3000)
    print(counts.summary())  # the figures, for the log of the run
    assert counts.drained, counts.summary()
    assert counts.refused_503 > 0, "the broker was down, yet no webhook got a 503"
    assert counts.results, counts.summary()
    assert counts.dead_letters, counts.summary()
    assert counts.duplicated_results == {}, counts.summary()
    assert counts.duplicated_dead_letters == {}, counts.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=600)
    parser.add_argument("--outage-s", type=float, default=18.0)
    parser.add_argument("--kafka-script", type=Path, help="another copy of scripts/kafka")
    args = parser.parse_args()
    if args.kafka_script is not None:
        broker_support.KAFKA_SCRIPT = args.kafka_script
    with tempfile.TemporaryDirectory(prefix="outage-") as workdir:
        run = run_outage(Path(workdir), webhooks=args.webhooks, outage_s=args.outage_s)
        counts = asyncio.run(run)
    print(counts.summary())


if __name__ == "__main__":
    main()
