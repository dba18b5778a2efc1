"""Static membership of the sink worker (``worker.group_instance_id``), as the worker has it.

Two sink workers with instance ids share the results; one is stopped with SIGTERM and started
again within the session timeout (60 s): it takes its partitions back without a rebalance, so
the other never rejoins nor gives anything up. Real processes on the real broker.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from tests.support.sinkstack import wait_until
from tests.support.stack import EXAMPLE_CONFIG, Proc, Stack, running_stack

INSTANCE_ENV = "HOOKSTREAM_TEST_INSTANCE_ID"
JOINED_MARK = "Joined group"  # aiokafka's INFO line at each (re)join: one per rebalance
ASSIGNED = re.compile(r"assigned (\d+) partitions of ")


def static_config(directory: Path) -> Path:
    text = EXAMPLE_CONFIG.read_text()
    worker = f"worker:\n  session_timeout_s: 60\n  group_instance_id: ${{{INSTANCE_ENV}}}\n"
    path = directory / "static-sinks.yaml"
    path.write_text(text.replace("worker:\n", worker, 1))
    return path


def sinks_proc(stack: Stack, config: Path, workdir: Path, name: str) -> Proc:
    args = ["sinks", "-c", str(config), "-l", "info"]
    env = {**stack.env, INSTANCE_ENV: name}
    proc = Proc(name=name, args=args, env=env, log_path=workdir / f"{name}.log")
    stack.procs[name] = proc  # stopped with the stack
    return proc


def last_assigned(text: str) -> int | None:
    found = ASSIGNED.findall(text)
    return int(found[-1]) if found else None


async def test_a_static_sink_worker_restarted_in_time_takes_its_partitions_back_alone(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with running_stack(kafka_bootstrap, tmp_path, roles=("gateway",)) as stack:
        config = static_config(tmp_path)
        first = sinks_proc(stack, config, tmp_path, "sinks-a")
        second = sinks_proc(stack, config, tmp_path, "sinks-b")
        await first.start()
        await second.start()

        async def split() -> bool:
            mine, theirs = last_assigned(first.log_text()), last_assigned(second.log_text())
            return bool(mine and theirs and mine + theirs == 8)

        await wait_until(split, timeout_s=90)
        joins_before = first.log_text().count(JOINED_MARK)
        revokes_before = first.log_text().count("partitions revoked")
        held = last_assigned(second.log_text())

        assert await second.stop(signal.SIGTERM) == 0
        mark = len(second.log_text())
        await second.start()

        async def back() -> bool:
            return last_assigned(second.log_text()[mark:]) == held

        await wait_until(back, timeout_s=60)
        # The other worker never rejoined nor gave up anything: no rebalance happened.
        assert first.log_text().count(JOINED_MARK) == joins_before
        assert first.log_text().count("partitions revoked") == revokes_before
