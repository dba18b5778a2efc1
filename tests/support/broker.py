"""A private Apache Kafka broker for tests that stop and restart it (scripts/kafka).

Tests that only need *a* broker use the shared one (``kafka_bootstrap``); tests of broker
failure start their own, on free ports and a temporary state directory, so stopping it cannot
disturb anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = REPO_ROOT / "scripts" / "kafka"
# A test's own broker lives for a test or a module under a small load, and its start is what
# costs: the JIT's first tier alone (no C2 compilations competing with the tests for the CPU)
# starts it in about 60 % of the time (7-11 s against 12-20 s on the shared 2-core machine).
PRIVATE_JVM_OPTS = "-XX:TieredStopAtLevel=1"


def private_env(state_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of scripts/kafka for a test's own broker or cluster in ``state_dir``.

    Without ``KAFKA_BOOTSTRAP_SERVERS`` (with it set, the script starts nothing); the readiness
    probe runs on this Python, which has aiokafka wherever the tests run (else the script falls
    back to Kafka's Java tool, a JVM start per try); ``KAFKA_JVM_OPTS`` is PRIVATE_JVM_OPTS
    unless the environment sets it. ``settings``: KAFKA_PORT and the like.
    """
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.setdefault("HOOKSTREAM_PYTHON", sys.executable)
    env.setdefault("KAFKA_JVM_OPTS", PRIVATE_JVM_OPTS)
    env.update(HOOKSTREAM_STATE_DIR=str(state_dir), **settings)
    return env


def kill_pid_file(pid_file: Path) -> None:
    """SIGKILL the broker whose pid ``pid_file`` holds, if it runs: for a test's throwaway
    broker, whose data nobody reads again (a controlled shutdown takes seconds)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PrivateBroker:
    state_dir: Path
    port: int
    controller_port: int
    # KAFKA_BROKER_SESSION_TIMEOUT_MS (scripts/kafka), None: Kafka's 9 s. A broker killed -9
    # and started again is not ready before its previous incarnation is fenced, that long
    # after the start: tests that kill it set a shorter one.
    session_timeout_ms: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The broker's process id (scripts/kafka's pid file), for tests that signal it."""
        return int((self.state_dir / "kafka" / "kafka.pid").read_text().strip())

    def _env(self, *, keep_data: bool) -> dict[str, str]:
        env = private_env(
            self.state_dir,
            KAFKA_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(self.controller_port),
        )
        if keep_data:
            env["KAFKA_KEEP_DATA"] = "1"
        if self.session_timeout_ms is not None:
            env["KAFKA_BROKER_SESSION_TIMEOUT_MS"] = str(self.session_timeout_ms)
        return env

    async def _script(self, command: str, *, keep_data: bool = False) -> None:
        process = await asyncio.create_subprocess_exec(
            str(KAFKA_SCRIPT),
            command,
            env=self._env(keep_data=keep_data),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(
                f"scripts/kafka {command} failed:\n{output.decode(errors='replace')}"
            )

    async def start(self, *, keep_data: bool = True) -> None:
        await self._script("up", keep_data=keep_data)

    async def stop(self) -> None:
        await self._script("down")

    def discard(self) -> None:
        """SIGKILL the broker if it runs (kill_pid_file): at the end of a test."""
        kill_pid_file(self.state_dir / "kafka" / "kafka.pid")


@asynccontextmanager
async def private_broker(
    state_dir: Path, *, session_timeout_ms: int | None = None
) -> AsyncIterator[PrivateBroker]:
    broker = PrivateBroker(state_dir, free_port(), free_port(), session_timeout_ms)
    await broker.start(keep_data=False)
    try:
        yield broker
    finally:
        broker.discard()
