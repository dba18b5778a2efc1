"""A paused flow does not hold up a rebalance or a stop (issue 17, "Outage means pause").

While every provider of a flow is down, its events wait in the worker. Faust waits for every
event it handed out before a rebalance or a stop goes on, so those waiting events used to hold
a stop until its kill timeout (over 90 s, then SIGKILL) and a rebalance for the outage's
length. Now the runner releases them unacked at that moment (``OrderedRunner.release``): they
have made no paid call and written nothing, and whoever owns their partition next reads them
again. Checked here with real workers: a second worker joins during the outage and later
stops with SIGTERM (exit 0), the first one too, and once the provider is back every event has
exactly one result, one answered call, and no dead letter.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import uuid
from collections import Counter
from pathlib import Path

from schemas.events import AIResult, EnrichedEvent
from tests.support.ai_stack import enriched, produce, write_config
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.stack import Proc, Stack, running_stack

EVENTS = 40


async def logged(proc: Proc, text: str, *, after: int = 0, timeout_s: float = 90.0) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if text in proc.log_text()[after:]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{proc.name} never logged {text!r}")


async def test_a_paused_flow_lets_rebalances_and_stops_through(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with running_stack(
        kafka_bootstrap,
        tmp_path,
        # 6 s sessions: the first worker, stopped while the second one's leave rebalances
        # the group, does not leave it itself (Faust), and its restart joins once its
        # stopped self's session expired (10 s by default).
        config_path=write_config(tmp_path, session_timeout_s=6),
        roles=("worker",),
        extra_env={"HOOKSTREAM_TEST_N": "4"},
        ai_knobs={"rate_500": 1.0},
    ) as stack:
        first = stack.procs["worker"]
        run = uuid.uuid4().hex[:6]
        records = [enriched(f"cus-{i}", f"Release {run} #{i}.") for i in range(EVENTS)]
        await produce(stack.bootstrap, stack.topic("enriched"), records)
        await logged(first, "pausing")  # both providers answer 500: the flow is paused

        # A second worker joins while the flow is paused: the rebalance must complete.
        second = Proc(
            name="worker-2",
            args=first.args,
            env={**stack.env, "HOOKSTREAM_STATE_DIR": str(tmp_path / "state-2")},
            log_path=tmp_path / "worker-2.log",
        )
        mark = len(first.log_text())
        await second.start()  # ready = it joined the group: the rebalance went through
        await logged(first, "released", after=mark)
        await logged(second, "pausing")  # it got partitions, and the outage too

        # Stops during the outage are clean (they used to run into their kill timeout).
        assert await second.stop(signal.SIGTERM, timeout_s=60) == 0
        assert await first.stop(signal.SIGTERM, timeout_s=60) == 0
        await first.start()
        await stack.ai.configure(rate_500=0.0)  # the provider is back
        await each_answered_once(stack, records)


async def each_answered_once(stack: Stack, records: list[EnrichedEvent]) -> None:
    """Once the provider is back: every record has exactly one result (none lost), no dead
    letter, and one answered (paid) call."""
    ids = {r.event.id for r in records}

    def all_done(found: list[Record]) -> bool:
        return ids <= {_event_id(r) for r in found}

    await wait_for_records(stack.bootstrap, stack.topic("results"), all_done, timeout_s=180)
    counts = Counter(_event_id(r) for r in await read_all(stack.bootstrap, stack.topic("results")))
    assert {counts[i] for i in ids} == {1}  # one result each, none lost
    dlq = await read_all(stack.bootstrap, stack.topic("dlq"))
    assert not dlq
    answered = Counter(
        call["user_text_sha256"]
        for call in (await stack.ai.stats())["calls"]
        if call["status"] == 200
    )
    for record in records:
        digest = hashlib.sha256(record.event.data["message"].encode()).hexdigest()
        assert answered[digest] == 1, record.event.data["message"]  # paid once


async def probe_in_flight(stack: Stack) -> None:
    """Until a model call is in the AI simulator: the paused flow's probe (nothing else calls
    while the flow is paused)."""
    for _ in range(600):
        if (await stack.ai.stats())["in_flight"] >= 1:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no probe reached the AI simulator")


def released_after_the_probe_failed(text: str) -> bool:
    """Did the worker let go of an event after a probe failed (``still unavailable``), in this
    log excerpt? The one-shot release never did: the probe it had to let finish went back to
    waiting at the closed gate and held Faust's wait until the kill timeout."""
    failed = text.find("still unavailable")
    return failed >= 0 and "released" in text[failed:]


async def test_a_stop_during_a_probe_that_fails_exits_by_itself_and_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGTERM while the paused flow's probe is in its model call, which then fails: the
    probe goes back to waiting, and the release, repeated while Faust waits, lets it go."""
    async with running_stack(
        kafka_bootstrap,
        tmp_path,
        config_path=write_config(tmp_path),
        roles=("worker",),
        extra_env={"HOOKSTREAM_TEST_N": "4"},
        ai_knobs={"rate_500": 1.0},
    ) as stack:
        worker = stack.procs["worker"]
        run = uuid.uuid4().hex[:6]
        records = [enriched(f"cus-{i}", f"Stop mid-probe {run} #{i}.") for i in range(12)]
        await produce(stack.bootstrap, stack.topic("enriched"), records)
        await logged(worker, "pausing")
        # A probe failed: the other events wait at the gate, both breakers are open, and the
        # next model call can only be a probe.
        await logged(worker, "still unavailable")
        # The next probe spends 3 s in each provider's call (primary, then backup), then fails.
        await stack.ai.configure(latency_ms=3000)
        await probe_in_flight(stack)
        mark = len(worker.log_text())
        # 0, not the -9 of the kill that follows 60 s without an exit: it stopped by itself.
        assert await worker.stop(signal.SIGTERM, timeout_s=60) == 0
        assert released_after_the_probe_failed(worker.log_text()[mark:])

        await stack.ai.configure(rate_500=0.0, latency_ms=0)  # the provider is back
        await worker.start()
        await each_answered_once(stack, records)


async def test_a_rebalance_during_a_probe_that_fails_completes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A second worker joins while the paused flow's probe is in its model call, which then
    fails: the first worker's wait for its events ends (the probe is let go once it waits
    again), the second gets partitions, and after the outage nothing is lost or paid twice."""
    async with running_stack(
        kafka_bootstrap,
        tmp_path,
        config_path=write_config(tmp_path),
        roles=("worker",),
        extra_env={"HOOKSTREAM_TEST_N": "4"},
        ai_knobs={"rate_500": 1.0},
    ) as stack:
        first = stack.procs["worker"]
        run = uuid.uuid4().hex[:6]
        records = [enriched(f"cus-{i}", f"Rebalance mid-probe {run} #{i}.") for i in range(24)]
        await produce(stack.bootstrap, stack.topic("enriched"), records)
        await logged(first, "pausing")
        await logged(first, "still unavailable")  # the next model call is a probe (see above)
        # 8 s in each provider's call: the probe is still out when the second worker joins.
        await stack.ai.configure(latency_ms=8000)
        await probe_in_flight(stack)
        mark = len(first.log_text())
        second = Proc(
            name="worker-2",
            args=first.args,
            env={**stack.env, "HOOKSTREAM_STATE_DIR": str(tmp_path / "state-2")},
            log_path=tmp_path / "worker-2.log",
        )
        await second.start()  # ready = it joined the group and has its partitions
        # The first worker's wait ended and it took part in the assignment (it was not
        # thrown out of the group for missing the rebalance's deadline).
        await logged(first, "Executing _on_partitions_assigned", after=mark)
        text = first.log_text()[mark:]
        # The probe was out when the rebalance began, failed during it, and was let go.
        began = text.index("letting go of waiting events")
        assert released_after_the_probe_failed(text[began:])

        await stack.ai.configure(rate_500=0.0, latency_ms=0)  # the provider is back
        await each_answered_once(stack, records)
        assert await second.stop(signal.SIGTERM, timeout_s=60) == 0


def _event_id(record: Record) -> str:
    return AIResult.model_validate(record.json()).event.id
