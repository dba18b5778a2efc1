"""The worker's and the sink worker's Kubernetes probes, on their --metrics-port.

``/readyz`` answers 503 ("starting: …") until every agent runs (the worker: its memories
loaded) and 200 from then on; ``/healthz`` answers 200 while the process runs. Real processes
on the real broker, asked the way a kubelet asks: plain GETs, repeated.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.support.broker import free_port
from tests.support.stack import Proc, running_stack

AGENTS = {
    "worker": ("agent hookstream.enrich running", "agent hookstream.ai running"),
    "sinks": ("agent hookstream.sink.",),
}


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str] | None:
    """The status and body, or None while nothing listens yet."""
    try:
        async with session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientConnectionError:
        return None


async def _until_ready(
    session: aiohttp.ClientSession, proc: Proc, base: str
) -> list[tuple[int, str]]:
    """Every /readyz answer until the first 200; once it is 200, the log shows every agent
    running (each logs it after entering the shared resources, memories loaded)."""
    answers: list[tuple[int, str]] = []
    while True:
        if proc.process is None:  # proc.start() has not spawned it yet
            await asyncio.sleep(0.05)
            continue
        assert proc.process.returncode is None, proc.log_text()[-3000:]
        answer = await _get(session, f"{base}/readyz")
        if answer is not None:
            answers.append(answer)
            if answer[0] == 200:
                log = proc.log_text()
                for mark in AGENTS[proc.name]:
                    assert mark in log, (mark, log[-3000:])
                return answers
        await asyncio.sleep(0.05)  # polling interval of a probe, not a wait for "nothing"


async def test_worker_and_sinks_are_ready_once_their_agents_run(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with (
        running_stack(kafka_bootstrap, tmp_path, roles=("gateway",)) as stack,
        aiohttp.ClientSession() as session,
    ):
        for role in ("worker", "sinks"):
            port = free_port()
            args = [role, "-c", str(stack.config_path), "-l", "info"]
            args += ["--metrics-port", str(port)]
            proc = Proc(name=role, args=args, env=stack.env, log_path=tmp_path / f"{role}.log")
            stack.procs[role] = proc
            starting = asyncio.create_task(proc.start())
            base = f"http://127.0.0.1:{port}"
            answers = await asyncio.wait_for(_until_ready(session, proc, base), 120)
            await starting
            assert answers[-1] == (200, "ok\n"), role
            for status, body in answers[:-1]:
                assert status == 503, (role, answers)
                assert body.startswith(("starting: ", "faust app ")), (role, answers)
            assert await _get(session, f"{base}/healthz") == (200, "ok\n"), role
            metrics = await _get(session, f"{base}/metrics")
            assert metrics is not None
            assert metrics[0] == 200
            assert "hookstream_" in metrics[1], role
            # Still ready on a later probe: readiness does not flap after start.
            assert await _get(session, f"{base}/readyz") == (200, "ok\n"), role

        # Stopping: the process answers no more (the kubelet's probes fail), and it ends
        # cleanly on SIGTERM.
        worker = stack.procs["worker"]
        assert await worker.stop() == 0
