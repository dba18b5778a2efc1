"""A private Apache Kafka broker for tests that stop and restart it (scripts/kafka).

Tests that only need *a* broker use the shared one (``kafka_bootstrap``); tests of broker
failure start their own, on free ports and a temporary state directory, so stopping it cannot
disturb anything else.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = REPO_ROOT / "scripts" / "kafka"


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

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The broker's process id (scripts/kafka's pid file), for tests that signal it."""
        return int((self.state_dir / "kafka" / "kafka.pid").read_text().strip())

    def _env(self, *, keep_data: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
        env.update(
            HOOKSTREAM_STATE_DIR=str(self.state_dir),
            KAFKA_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(self.controller_port),
        )
        if keep_data:
            env["KAFKA_KEEP_DATA"] = "1"
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


@asynccontextmanager
async def private_broker(state_dir: Path) -> AsyncIterator[PrivateBroker]:
    broker = PrivateBroker(state_dir, free_port(), free_port())
    await broker.start(keep_data=False)
    try:
        yield broker
    finally:
        await broker.stop()
