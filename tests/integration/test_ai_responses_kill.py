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

from schemas.events import AIResult, EnrichedEvent
from tests.support.ai_stack import enriched, produce, write_config
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.sinkstack import wait_until
from tests.support.stack import Stack, running_stack

EVENTS = 12


@pytest.mark.parametrize(("mode", "paid_each"), [("background", 1), ("sync", 2)])
async def test_a_worker_killed_while_its_responses_are_in_progress_pays_once_in_background(
    kafka_bootstrap: str, tmp_path: Path, mode: str, paid_each: int
) -> None:
    background = mode == "background"
    async with running_stack(
        kafka_bootstrap,
        tmp_path,
        # 6 s sessions: the worker started again after the kill joins once its killed
        # self's session expired (10 s by default).
        config_path=write_config(tmp_path, responses=mode, session_timeout_s=6),
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


async def test_a_worker_stopped_while_it_polls_held_responses_exits_and_pays_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGTERM while every event polls a response the simulator holds ``in_progress``: the
    polls are released (their ids are on Kafka), so the worker exits by itself with the hold
    still on, instead of waiting for the answers; restarted, it polls the same ids."""
    async with running_stack(
        kafka_bootstrap,
        tmp_path,
        config_path=write_config(tmp_path, responses="background"),
        roles=("worker",),
        extra_env={"HOOKSTREAM_TEST_N": str(EVENTS)},
    ) as stack:
        ai = stack.ai
        await ai.request_json("POST", "/_sim/responses/config", json={"hold": True})
        worker = stack.procs["worker"]
        run = uuid.uuid4().hex[:6]
        texts = [f"Stop while polling {run} #{i}." for i in range(EVENTS)]
        records = [enriched(f"cus-{i}", text) for i, text in enumerate(texts)]
        ids = {r.event.id for r in records}
        await produce(stack.bootstrap, stack.topic("enriched"), records)

        async def all_polled() -> bool:
            stats = await ai.stats()
            return int(stats["responses"]["by_status"]["in_progress"]) >= EVENTS

        await wait_until(all_polled, poll_s=0.1)
        # 0, not the -9 of the kill that follows 30 s without an exit; the hold is still on,
        # so no poll had ended: the worker let go of them.
        assert await worker.stop(signal.SIGTERM, timeout_s=30) == 0
        held = (await ai.stats())["responses"]
        assert held["hold"] is True
        assert held["by_status"]["in_progress"] == EVENTS
        assert "released" in worker.log_text()
        mark = len(worker.log_text())
        await worker.start()
        await ai.request_json("POST", "/_sim/responses/config", json={"hold": False})

        def all_done(found: list[Record]) -> bool:
            return ids <= {_event_id(r) for r in found}

        await wait_for_records(stack.bootstrap, stack.topic("results"), all_done, timeout_s=120)
        found = await read_all(stack.bootstrap, stack.topic("results"))
        counts = Counter(_event_id(r) for r in found if _event_id(r) in ids)
        assert set(counts.values()) == {1}, counts  # one result each
        assert (await ai.stats())["responses"]["paid"] == EVENTS  # one response each
        assert worker.log_text()[mark:].count("polled again, not paid twice") == EVENTS


def _event_id(record: Record) -> str:
    return AIResult.model_validate(record.json()).event.id


async def test_re_asks_and_fallbacks_work_in_background_mode(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A re-ask after an invalid answer is a response of its own (paid once more, not the
    first one fetched again by its recorded id); a model that is down hands over to the
    fallback (Anthropic Messages) as in synchronous mode."""
    async with running_stack(
        kafka_bootstrap,
        tmp_path,
        config_path=write_config(tmp_path, responses="background"),
        roles=("worker",),
        ai_knobs={"rate_malformed": 0.3, "seed": 7},
    ) as stack:
        ai = stack.ai
        run = uuid.uuid4().hex[:6]
        texts = [f"Re-ask {run} #{i}." for i in range(EVENTS)]
        records = [enriched(f"cus-{i}", text) for i, text in enumerate(texts)]
        await produce(stack.bootstrap, stack.topic("enriched"), records)
        # Malformed twice (re-ask included) is dead-lettered: each event ends in one or the other.
        results, dead = await _outcomes(stack, records)
        assert len(results) + len(dead) == EVENTS
        reasks = [
            call
            for text in texts
            for call in await ai.calls_for(text)
            if call["reask"] and call["status"] == 200
        ]
        assert reasks  # the seed makes some answers malformed
        for result in results.values():  # usage and cost from the polled response, as today
            assert result.usage.prompt_tokens > 0
            assert result.usage.completion_tokens > 0
            assert result.cost_usd == pytest.approx(
                (result.usage.prompt_tokens * 150 + result.usage.completion_tokens * 600) / 1e6
            )
        assert sum(r.reasked for r in results.values()) == len(reasks) - len(dead)
        assert (await ai.stats())["responses"]["paid"] == EVENTS + len(reasks)

        await ai.configure(rate_malformed=0.0, down_models=["sim-1"])
        more = [enriched(f"cus-{i}", f"Fallback {run} #{i}.") for i in range(3)]
        await produce(stack.bootstrap, stack.topic("enriched"), more)
        fallen, none = await _outcomes(stack, more)
        assert not none
        assert {(r.provider, r.fallback) for r in fallen.values()} == {("backup", True)}
        # The 503s created nothing: no response paid for them.
        assert (await ai.stats())["responses"]["paid"] == EVENTS + len(reasks)


async def _outcomes(
    stack: Stack, records: list[EnrichedEvent]
) -> tuple[dict[str, AIResult], set[str]]:
    """Each event's result, or its dead letter, once every event has one (never both)."""
    ids = {r.event.id for r in records}
    results_topic, dlq = stack.topic("results"), stack.topic("dlq")

    async def every_outcome() -> tuple[list[AIResult], set[str]] | None:
        found = [
            AIResult.model_validate(r.json())
            for r in await read_all(stack.bootstrap, results_topic)
        ]
        dead = {
            EnrichedEvent.model_validate(r.json()).event.id
            for r in await read_all(stack.bootstrap, dlq)
        }
        done = {r.event.id for r in found} | dead
        return (found, dead & ids) if ids <= done else None

    found, dead = await wait_until(every_outcome, timeout_s=120, poll_s=0.5)
    counts = Counter(r.event.id for r in found if r.event.id in ids)
    assert set(counts.values()) == {1}, counts
    assert not dead & set(counts)
    return {r.event.id: r for r in found if r.event.id in ids}, dead
