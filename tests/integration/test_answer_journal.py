"""A model answer that arrived before a crash is not paid for again (issue 17, "paid once").

The window is made wide and certain instead of hoped for: a private broker is frozen with
SIGSTOP while the worker's calls are at the AI simulator, so the answers arrive but their
results cannot be acknowledged. The worker is then killed with SIGKILL, the broker killed too
(a thawed one would read the results still in the dead worker's sockets, and the crash recovery
would find those) and started again on its data, then the worker. Without the answer journal
every event is answered by a second call (``calls_for`` gives 2, checked with
``worker.answer_journal: false``); with it, the restarted worker writes every result from its
journal and the simulator sees one call per event.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from pathlib import Path

from schemas.events import AIResult
from tests.support.ai_stack import enriched, produce, write_config
from tests.support.broker import private_broker
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.sinkstack import wait_until
from tests.support.stack import running_stack

EVENTS = 12


def journaled(state_dir: Path) -> int:
    """Answers in the worker's journal files (the sentinel that they reached the worker)."""
    return sum(
        path.read_bytes().count(b'{"k":') for path in (state_dir / "answers").glob("*/slot-*.jsonl")
    )


async def test_answers_that_arrived_before_a_crash_are_not_paid_again(tmp_path: Path) -> None:
    async with (
        # A 3 s broker session, not 9: the broker killed below serves again once its killed
        # incarnation is fenced, that long after its restart.
        private_broker(tmp_path / "broker", session_timeout_ms=3000) as broker,
        running_stack(
            broker.bootstrap,
            tmp_path,
            # 6 s sessions: the restarted worker joins once its killed self's expired.
            config_path=write_config(tmp_path, session_timeout_s=6),
            roles=("worker",),
            extra_env={"HOOKSTREAM_TEST_N": str(EVENTS)},
            ai_knobs={"latency_ms": 1500},
        ) as stack,
    ):
        worker = stack.procs["worker"]
        run = uuid.uuid4().hex[:6]
        texts = {f"Paid once {run} #{i}." for i in range(EVENTS)}
        records = [enriched(f"cus-{i}", text) for i, text in enumerate(sorted(texts))]
        ids = {r.event.id for r in records}
        await produce(stack.bootstrap, stack.topic("enriched"), records)

        async def all_at_the_provider() -> bool:
            return int((await stack.ai.stats())["in_flight"]) >= EVENTS

        await wait_until(all_at_the_provider, poll_s=0.1)  # every call is at the simulator
        pid = broker.pid
        os.kill(pid, signal.SIGSTOP)  # no result can reach Kafka from now on
        try:
            state = Path(worker.env["HOOKSTREAM_STATE_DIR"])

            async def all_journaled() -> bool:
                return journaled(state) >= EVENTS

            await wait_until(all_journaled, poll_s=0.1)
            assert await worker.stop(signal.SIGKILL) == -signal.SIGKILL
        finally:
            # Killed, not thawed: a thawed broker would still read the results the dead
            # worker's sockets held (the kernel sends them after the process is gone), and the
            # crash recovery, not the journal, would find them.
            os.kill(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGCONT)
        await broker.start()  # the same data: the events were acknowledged before the freeze
        await worker.start()

        def all_done(found: list[Record]) -> bool:
            return ids <= {_event_id(r) for r in found}

        await wait_for_records(stack.bootstrap, stack.topic("results"), all_done, timeout_s=120)
        found = await read_all(stack.bootstrap, stack.topic("results"))
        counts = Counter(_event_id(r) for r in found if _event_id(r) in ids)
        assert set(counts.values()) == {1}, counts  # one result each
        for text in texts:
            calls = await stack.ai.calls_for(text)
            assert len(calls) == 1, (text, calls)  # and one paid call each
        log_text = worker.log_text()
        assert f"answer journal: {EVENTS} answers from before the restart" in log_text
        assert log_text.count("from the answer journal (paid before the restart)") == EVENTS


def _event_id(record: Record) -> str:
    return AIResult.model_validate(record.json()).event.id
