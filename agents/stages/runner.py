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

- optionally, events are sorted into groups (the AI stage: one per flow) each with its own
  bound inside the overall one, so that a group whose events cannot progress (a paused flow)
  holds at most its own share of the slots. The runner keeps pulling while the group of the
  next event has room; it stops at the first event of a full group (it cannot skip it: the
  commit would pass it), so the other groups run on until such an event comes next.

``handle`` must deal with its own failures (retry, then dead-letter). If it raises anyway — the
dead-letter write itself failing, say — the runner retries it after a pause rather than ack an
event that was not handled.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from streams.logs import bind_record

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
    task: asyncio.Task[None] | None = None
    detached: bool = False  # cut off by a release: not acked when done (see release)
    started: bool = False  # its handler began (its key's predecessor is done)


@dataclass(frozen=True)
class Groups(Generic[E]):
    """Per-group bounds: ``group_of(event)`` names an event's group, ``limits`` the most
    events of each group admitted at once; a group not listed has only the overall bound."""

    group_of: Callable[[E], Hashable]
    limits: Mapping[Hashable, int]


@dataclass
class RunnerStats:
    """Live counters, read by metrics and tests."""

    in_flight: int = 0
    max_in_flight_seen: int = 0
    handled: int = 0
    handler_crashes: int = 0
    pending_by_partition: dict[Any, int] = field(default_factory=dict)
    in_flight_by_group: dict[Hashable, int] = field(default_factory=dict)
    released: int = 0


class OrderedRunner(Generic[E]):
    def __init__(
        self,
        handle: Callable[[E], Awaitable[None]],
        *,
        max_in_flight: int,
        crash_retry_s: float = 1.0,
        groups: Groups[E] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._handle = handle
        self._slots = asyncio.Semaphore(max_in_flight)
        self._group_of = groups.group_of if groups is not None else None
        self._group_slots = {
            name: asyncio.Semaphore(max(1, limit))
            for name, limit in (groups.limits.items() if groups is not None else ())
        }
        self._crash_retry_s = crash_retry_s
        self._tails: dict[Any, asyncio.Task[None]] = {}
        self._pending: dict[Any, deque[_Entry[E]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: E | None = None
        # Busy entries a release cut off from their partition's queue, by task: released in
        # turn by a later release once they wait again (a probe that failed).
        self._detached: dict[asyncio.Task[None], _Entry[E]] = {}
        # From a release until resume(): events read meanwhile are let go at once, unhandled.
        self._releasing = False
        self.stats = RunnerStats()

    async def run(self, events: AsyncIterable[E]) -> None:
        """Consume ``events`` (Faust's noack stream events) until it ends or is cancelled."""
        try:
            async for event in events:
                if self._releasing:  # read after a release, before Faust paused the stream
                    self._let_go(event)
                    continue
                # Held until it has its slots; a release meanwhile lets go of it (see release).
                self._held = event
                group = self._group(event)
                if group is not None:
                    await group[1].acquire()
                await self._slots.acquire()
                if self._held is None:
                    self._slots.release()
                    if group is not None:
                        group[1].release()
                    continue
                self._held = None
                self._admit(event, group)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until every admitted event is handled (used at shutdown and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _group(self, event: E) -> tuple[Hashable, asyncio.Semaphore] | None:
        if self._group_of is None:
            return None
        name = self._group_of(event)
        slots = self._group_slots.get(name)
        return None if slots is None else (name, slots)

    def _admit(self, event: E, group: tuple[Hashable, asyncio.Semaphore] | None = None) -> None:
        tp = event.message.tp
        entry = _Entry(event)
        if group is not None:
            by_group = self.stats.in_flight_by_group
            by_group[group[0]] = by_group.get(group[0], 0) + 1
        self._pending.setdefault(tp, deque()).append(entry)
        key = (tp, event.key)
        previous = self._tails.get(key)
        task = asyncio.create_task(self._run_one(entry, key, previous, group))
        entry.task = task
        self._tails[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.stats.in_flight += 1
        self.stats.max_in_flight_seen = max(self.stats.max_in_flight_seen, self.stats.in_flight)

    async def _run_one(
        self,
        entry: _Entry[E],
        key: Any,
        previous: asyncio.Task[None] | None,
        group: tuple[Hashable, asyncio.Semaphore] | None,
    ) -> None:
        # This task's log lines are about this record (streams.logs; the stage adds its ids).
        bind_record(entry.event.message)
        try:
            if previous is not None and not previous.done():
                # Same key: wait for the earlier event; its outcome does not matter here.
                await _finished(previous)
            entry.started = True
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
            if entry.detached:  # released behind an earlier event: redone, never acked here
                entry.event.message.acked = True
            else:
                self._ack_ready(entry.event.message.tp)
        finally:
            if entry.task is not None:
                self._detached.pop(entry.task, None)
            self.stats.in_flight -= 1
            self._slots.release()
            if group is not None:
                self.stats.in_flight_by_group[group[0]] -= 1
                group[1].release()
            if self._tails.get(key) is asyncio.current_task():
                del self._tails[key]

    def release(self, busy: Callable[[asyncio.Task[None]], bool]) -> int:
        """Give back, unacked, the events that only wait; return how many were cancelled.

        Called when Faust is about to wait for every admitted event to be acked (a rebalance,
        or the worker stopping): an event that is only waiting — behind its key's predecessor,
        for a call slot, or for a paused flow's provider — could keep that wait going for as
        long as an outage lasts. Such an event has made no call and written nothing, so it is
        cancelled and left unacked, and whoever owns its partition after the rebalance reads it
        again from the committed offset. Its message is marked acked *for Faust's wait only*
        (``message.acked``, which ``wait_empty`` reads), never passed to ``consumer.ack``.

        Nothing after the first released event of a partition is acked any more, done or not:
        Faust commits past a gap at the head of its acked offsets when the gap is one offset
        wide (``_new_offset`` tests ``min(acked) - committed > 1``), so acking the event after
        a released one would commit past it and lose it (seen: 2 of 1,000 events in the
        rebalance test). Those later events are redone by the next owner and skipped there by
        their "done" markers. A ``busy`` one (in a model call, or writing its result) is let
        finish first — cancelling it could pay for an answer twice or write a result twice —
        and its message is marked for Faust's wait only when it ends. One still waiting for
        its key's predecessor is never busy: its handler has not begun, and it must not run
        before a released predecessor.

        It is called again for as long as Faust waits (:mod:`agents.faust_app`), and only then:
        an event busy at one call may stop being busy without ending — the outage gate's
        probe, whose call failed, waits at the closed gate again — and the next call releases
        it. Between calls everything stays as the last one left it, so repeating is safe.
        Until :meth:`resume`, an event read is let go at once: admitted, it could finish and be
        acked behind a released one (a rebalance's release may run just before Faust pauses
        the stream).
        """
        self._releasing = True
        released = 0
        if self._held is not None:  # read, still waiting for a slot: the last one read
            self._held.message.acked = True
            self._held = None
            released += 1
        for task, entry in list(self._detached.items()):
            if not _busy(entry, busy):  # cut off while busy, waiting again now
                del self._detached[task]
                task.cancel()
                entry.event.message.acked = True
                released += 1
        for tp, queue in list(self._pending.items()):
            entries = list(queue)
            first = next(
                (i for i, entry in enumerate(entries) if not entry.done and not _busy(entry, busy)),
                None,
            )
            if first is None:
                continue
            for entry in entries[first:]:
                if entry.done:
                    entry.event.message.acked = True
                elif _busy(entry, busy) and entry.task is not None:
                    entry.detached = True  # finishes, then is marked (see _run_one)
                    self._detached[entry.task] = entry
                else:
                    if entry.task is not None:
                        entry.task.cancel()
                    entry.event.message.acked = True
                    released += 1
            self._pending[tp] = deque(entries[:first])
            self._ack_ready(tp)
        if released:
            self.stats.released += released
            log.info("released %d waiting events unacked, to be read again", released)
        return released

    def resume(self) -> None:
        """Faust's wait is over and the partitions are assigned again: events read from now on
        are the new assignment's, from its committed offsets, and are handled as usual."""
        self._releasing = False

    def _let_go(self, event: E) -> None:
        """Release an event read while releasing: neither handled nor acked (see release)."""
        event.message.acked = True
        self.stats.released += 1
        log.info("released an event read during a release unacked, to be read again")

    def _ack_ready(self, tp: Any) -> None:
        """Ack the done prefix of the partition's queue, in offset order."""
        queue = self._pending.get(tp)
        if queue is None:
            return  # released: nothing of it is acked
        while queue and queue[0].done:
            queue.popleft().event.ack()
        self.stats.pending_by_partition[tp] = len(queue)
        if not queue:
            del self._pending[tp]


async def _finished(task: asyncio.Task[None]) -> None:
    """Wait until ``task`` ends, however it ends, without taking its outcome: what
    ``asyncio.wait([task])`` does, for a third of its CPU (no set, no timeout machinery;
    issue 16). Cancelling the waiter leaves ``task`` running."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(_: asyncio.Task[None]) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        task.remove_done_callback(wake)


def _busy(entry: _Entry[Any], busy: Callable[[asyncio.Task[None]], bool]) -> bool:
    """Must this entry's task be let finish? One still waiting for its key's predecessor is
    not: its handler has not begun (and it must not run before a released predecessor)."""
    task = entry.task
    return task is not None and not task.done() and entry.started and busy(task)
