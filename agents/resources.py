"""The per-process connections the agents share: one HTTP session and one Kafka writer.

Reference-counted: the first agent to enter starts them, the last to leave (at worker stop)
closes them. Faust restarts a crashed agent by calling its function again, which simply
re-enters.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import aiohttp

from agents.http import new_session
from schemas.config import HookstreamConfig
from streams.producer import KafkaWriter


class Resources:
    def __init__(self, config: HookstreamConfig, *, client_id: str) -> None:
        self.config = config
        self.client_id = client_id
        self._lock = asyncio.Lock()
        self._users = 0
        self._session: aiohttp.ClientSession | None = None
        self._writer: KafkaWriter | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Resources used outside `async with`")
        return self._session

    @property
    def writer(self) -> KafkaWriter:
        if self._writer is None:
            raise RuntimeError("Resources used outside `async with`")
        return self._writer

    async def __aenter__(self) -> Resources:
        async with self._lock:
            if self._users == 0:
                writer = KafkaWriter(self.config.kafka, client_id=self.client_id)
                await writer.start()
                self._writer = writer
                self._session = new_session(
                    connect_timeout_s=self.config.worker.http_connect_timeout_s
                )
            self._users += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with self._lock:
            self._users -= 1
            if self._users == 0:
                session, writer = self._session, self._writer
                self._session = self._writer = None
                if session is not None:
                    await session.close()
                if writer is not None:
                    await writer.stop()
