"""Key-ordered, bounded concurrency over a Faust stream, with commits that never skip work.

Faust's own ``concurrency=N`` runs N copies of an agent over one stream: order per key is lost,
and acks arriving out of offset order can let the commit pass an event still in flight
(faust-streaming #606). This runner replaces it:

- one task per event, at most ``max_in_flight`` at once; when all slots are taken the runner
  stops pulling from the stream, so Kafka's consumer pauses instead of buffering (backpressure);
- events with the same Kafka key run one after the other, in offset order; different keys run
  concurrently;
- acks reach Faust strictly in offset order per partition: an event is acked only once it and
  every event before it in its partition are done, so a slow head holds the commit back and a
  crash redoes exactly the unfinished events.

``handle`` must deal with its own failures (retry, then dead-letter). If it raises anyway — the
dead-letter write itself failing, say — the runner retries it after a pause rather than ack an
event that was not handled.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger(__name__)


class EventLike(Protocol):
    """What the runner needs of a Faust event (``faust.types.EventT``)."""

    @property
    def key(self) -> Any: ...

    @property
    def message(self) -> Any: ...

    def ack(self) -> bool: ...


E = TypeVar("E", bound=EventLike)


@dataclass(slots=True)
class _Entry(Generic[E]):
    event: E
    done: bool = False


@dataclass
class RunnerStats:
    """Live counters, read by metrics and tests."""

    in_flight: int = 0
    max_in_flight_seen: int = 0
    handled: int = 0
    handler_crashes: int = 0
    pending_by_partition: dict[Any, int] = field(default_factory=dict)


class OrderedRunner(Generic[E]):
    def __init__(
        self,
        handle: Callable[[E], Awaitable[None]],
        *,
        max_in_flight: int,
        crash_retry_s: float = 1.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._handle = handle
        self._slots = asyncio.Semaphore(max_in_flight)
        self._crash_retry_s = crash_retry_s
        self._tails: dict[Any, asyncio.Task[None]] = {}
        self._pending: dict[Any, deque[_Entry[E]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = RunnerStats()

    async def run(self, events: AsyncIterable[E]) -> None:
        """Consume ``events`` (Faust's noack stream events) until it ends or is cancelled."""
        try:
            async for event in events:
                await self._slots.acquire()
                self._admit(event)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until every admitted event is handled (used at shutdown and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _admit(self, event: E) -> None:
        tp = event.message.tp
        entry = _Entry(event)
        self._pending.setdefault(tp, deque()).append(entry)
        key = (tp, event.key)
        previous = self._tails.get(key)
        task = asyncio.create_task(self._run_one(entry, key, previous))
        self._tails[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.stats.in_flight += 1
        self.stats.max_in_flight_seen = max(self.stats.max_in_flight_seen, self.stats.in_flight)

    async def _run_one(
        self, entry: _Entry[E], key: Any, previous: asyncio.Task[None] | None
    ) -> None:
        try:
            if previous is not None:
                # Same key: wait for the earlier event; its outcome does not matter here.
                await asyncio.wait([previous])
            while True:
                try:
                    await self._handle(entry.event)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.stats.handler_crashes += 1
                    log.exception(
                        "handler failed outside its own error handling; retrying in %.1f s",
                        self._crash_retry_s,
                    )
                    await asyncio.sleep(self._crash_retry_s)
            entry.done = True
            self.stats.handled += 1
            self._ack_ready(entry.event.message.tp)
        finally:
            self.stats.in_flight -= 1
            self._slots.release()
            if self._tails.get(key) is asyncio.current_task():
                del self._tails[key]

    def _ack_ready(self, tp: Any) -> None:
        """Ack the done prefix of the partition's queue, in offset order."""
        queue = self._pending[tp]
        while queue and queue[0].done:
            queue.popleft().event.ack()
        self.stats.pending_by_partition[tp] = len(queue)
        if not queue:
            del self._pending[tp]
