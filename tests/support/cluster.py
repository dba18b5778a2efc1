"""A private three-broker Kafka cluster for tests: ``scripts/kafka up --brokers 3`` in a state
dir of its own, on free ports (client ports base..base+2, controller ports base+3..base+5).

The shared broker of ``make test`` is never touched: ``KAFKA_BOOTSTRAP_SERVERS`` is removed
from the script's environment (with it set, the script starts nothing) and
``KAFKA_CONTROLLER_PORT`` is set explicitly (.ci/run exports its own broker's).
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from tests.support.broker import kill_pid_file, private_env
from tests.support.secure_kafka import KAFKA_SCRIPT, _free_run

BROKERS = 3


@dataclass
class PrivateCluster:
    state_dir: Path
    port: int  # node I (1..3) serves clients on port + I - 1
    # KAFKA_BROKER_SESSION_TIMEOUT_MS (scripts/kafka), None: Kafka's 9 s, after which the
    # partitions a killed node led move to the others.
    session_timeout_ms: int | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + i}" for i in range(BROKERS))

    def _env(self) -> dict[str, str]:
        env = private_env(
            self.state_dir,
            KAFKA_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(self.port + BROKERS),
            KAFKA_BROKERS=str(BROKERS),
        )
        if self.session_timeout_ms is not None:
            env["KAFKA_BROKER_SESSION_TIMEOUT_MS"] = str(self.session_timeout_ms)
        return env

    async def script(self, *args: str) -> str:
        """Run scripts/kafka ARGS against this cluster; its stdout (raises on failure)."""
        process = await asyncio.create_subprocess_exec(
            str(KAFKA_SCRIPT),
            *args,
            env=self._env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(
                f"scripts/kafka {' '.join(args)} failed ({process.returncode}):\n"
                f"{err.decode(errors='replace')[-4000:]}"
            )
        return out.decode()

    async def start(self) -> str:
        """``up``: starts the whole cluster, or the nodes of it that are down (with their
        data); returns the bootstrap list the script printed."""
        return (await self.script("up")).strip().splitlines()[-1]

    async def stop(self) -> None:
        await self.script("down")

    def discard(self) -> None:
        """SIGKILL every node still running: for a test's throwaway cluster, whose data nobody
        reads again (a controlled shutdown of three nodes takes ~30 s of the suite)."""
        for node_id in range(1, BROKERS + 1):
            kill_pid_file(self.state_dir / "kafka" / f"node-{node_id}" / "kafka.pid")

    def pid(self, node_id: int) -> int:
        return int((self.state_dir / "kafka" / f"node-{node_id}" / "kafka.pid").read_text())

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown, as when a machine dies."""
        os.kill(self.pid(node_id), signal.SIGKILL)


def new_cluster(state_dir: Path, *, session_timeout_ms: int | None = None) -> PrivateCluster:
    return PrivateCluster(state_dir, _free_run(2 * BROKERS), session_timeout_ms)
