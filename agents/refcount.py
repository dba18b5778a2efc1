"""Reference-counted start/stop for what several agents of one process share.

Each Faust agent enters the shared object when it starts; the first to enter starts it, the last
to leave (at worker stop) stops it. Faust restarts a crashed agent by calling its function
again, which simply re-enters.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self


class RefCounted:
    """Subclasses implement ``_start`` and ``_stop``; ``async with`` does the counting."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._users = 0

    @property
    def users(self) -> int:
        """How many have entered and found it started (the worker's /readyz counts them)."""
        return self._users

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        async with self._lock:
            if self._users == 0:
                await self._start()
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
                await self._stop()
