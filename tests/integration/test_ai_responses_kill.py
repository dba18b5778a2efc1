"""A worker killed with SIGKILL while the model works on its events pays nothing twice in
background mode (issue 15): every event gets exactly one result, and the provider created
exactly one response per event.

The window is made certain instead of hoped for: the AI simulator holds background responses
``in_progress`` until released, and the worker is killed once each event's response has been
polled (so its id was on Kafka before: the client records it before the first poll). The
restarted worker is then the "next owner" of every partition: it finds each id in the state
topic and polls it (with a state directory of its own, so nothing local helps it). The same
run with the synchronous Responses API (the simulator answering after 3 s, the kill while
every call waits) shows what the test would see without background mode: a second paid
response per event.
"""

from __future__ import annotations

import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest

from schemas.events import AIResult
from tests.support.ai_stack import enriched, produce, write_config
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.sinkstack import wait_until
from tests.support.stack import running_stack

EVENTS = 12


@pytest.mark.parametrize(("mode", "paid_each"), [("background", 1), ("sync", 2)])
async def test_a_worker_killed_while_its_responses_are_in_progress_pays_once_in_background(
    kafka_bootstrap: str, tmp_path: Path, mode: str, paid_each: int
) -> None:
    background = mode == "background"
    async with running_stack(
        kafka_bootstrap,
        tmp_path,
        config_path=write_config(tmp_path, responses=mode),
        roles=("worker",),
        extra_env={"HOOKSTREAM_TEST_N": str(EVENTS)},
        ai_knobs={"latency_ms": 0 if background else 3000},
    ) as stack:
        ai = stack.ai
        if background:
            await ai.request_json("POST", "/_sim/responses/config", json={"hold": True})
        worker = stack.procs["worker"]
        run = uuid.uuid4().hex[:6]
        texts = sorted(f"Background {run} #{i}." for i in range(EVENTS))
        records = [enriched(f"cus-{i}", text) for i, text in enumerate(texts)]
        ids = {r.event.id for r in records}
        await produce(stack.bootstrap, stack.topic("enriched"), records)

        async def all_waiting() -> bool:
            stats = await ai.stats()
            if background:  # polled at least once, so recorded on Kafka before
                return int(stats["responses"]["by_status"]["in_progress"]) >= EVENTS
            return int(stats["in_flight"]) >= EVENTS  # every call waits at the provider

        await wait_until(all_waiting, poll_s=0.1)
        assert await worker.stop(signal.SIGKILL) == -signal.SIGKILL
        # A state directory of its own: nothing local (the answer journal) carries over, so
        # the restarted worker stands for any next owner of the partitions.
        worker.env["HOOKSTREAM_STATE_DIR"] = str(tmp_path / "next-owner")
        await worker.start()
        if background:
            await ai.request_json("POST", "/_sim/responses/config", json={"hold": False})

        def all_done(found: list[Record]) -> bool:
            return ids <= {_event_id(r) for r in found}

        await wait_for_records(stack.bootstrap, stack.topic("results"), all_done, timeout_s=120)
        found = await read_all(stack.bootstrap, stack.topic("results"))
        counts = Counter(_event_id(r) for r in found if _event_id(r) in ids)
        assert set(counts.values()) == {1}, counts  # one result each
        for text in texts:
            paid = [c for c in await ai.calls_for(text) if c["status"] == 200]
            assert len(paid) == paid_each, (text, paid)
        assert (await ai.stats())["responses"]["paid"] == EVENTS * paid_each
        if background:
            assert worker.log_text().count("polled again, not paid twice") == EVENTS


def _event_id(record: Record) -> str:
    return AIResult.model_validate(record.json()).event.id
