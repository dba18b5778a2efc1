"""A clock that moves only when a test moves it, for code that keeps time through an injected
:class:`schemas.clock.Clock` (the HTTP layer, the sinks' outage gate).

With it a timeout fires at the instant the test chooses, in microseconds, and never by accident
on a slow machine: the test shows "not yet" just before a limit and "now" just after it, with no
sleep and no timed assertion. Timers run synchronously inside :meth:`ManualClock.advance`, in
the order they fall due, each with the clock reading its own due time (a sweep that re-arms
itself runs once per period crossed, as it would on the event loop).

For code that also *waits* on the clock (a backoff), :meth:`ManualClock.run` plays the event
loop's part: it lets every task run until all of them wait, then moves time to the next timer,
and again, so each thing happens at the exact instant it is due and the test can check that
instant to the value.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(order=True)
class ManualTimer:
    due_s: float
    sequence: int  # timers due at the same instant run in the order they were set
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """``time()`` and ``call_later()`` like the event loop's; time passes in :meth:`advance`
    (by a step the test chooses) or :meth:`run` (from timer to timer while every task waits)."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s
        self._timers: list[ManualTimer] = []
        self._sequence = itertools.count()

    def time(self) -> float:
        return self.now_s

    def call_later(self, delay: float, callback: Callable[[], object], /) -> ManualTimer:
        timer = ManualTimer(self.now_s + max(delay, 0.0), next(self._sequence), callback)
        heapq.heappush(self._timers, timer)
        return timer

    async def sleep(self, delay_s: float) -> None:
        """``asyncio.sleep`` on this clock: returns once the clock has moved ``delay_s`` on."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_later(delay_s, functools.partial(_wake, woken))
        try:
            await woken
        finally:
            timer.cancel()

    def next_due_s(self) -> float | None:
        """When the next timer falls due (None: none is set)."""
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0].due_s if self._timers else None

    async def run(
        self, until: Callable[[], bool], *, limit_s: float = 3600.0, max_steps: int = 10_000
    ) -> None:
        """Run the event loop with time passing only while every task waits, until ``until()``.

        Between steps the loop settles (see :func:`settle`); then the clock jumps to the next
        timer. Raises AssertionError instead of hanging when nothing is left to wait for (a
        deadlock), or the clock would pass ``limit_s`` from now, or ``max_steps`` timers have
        run (a loop that never ends, such as a timer re-set at the instant it fires).
        """
        end_s = self.now_s + limit_s
        for _ in range(max_steps):
            await settle()
            if until():
                return
            due_s = self.next_due_s()
            if due_s is None:
                raise AssertionError("deadlock: tasks still wait and no timer is set")
            if due_s > end_s:
                raise AssertionError(f"still not done after {limit_s:g} s on the clock")
            self.advance_to(due_s)
        raise AssertionError(f"still not done after {max_steps} timers, at {self.now_s:g} s")

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, running every timer that falls due on the way."""
        self.advance_to(self.now_s + seconds)

    def advance_to(self, until_s: float) -> None:
        """Move time on to ``until_s`` exactly, running every timer that falls due on the way."""
        while self._timers and self._timers[0].due_s <= until_s:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now_s = timer.due_s
            timer.callback()
        self.now_s = until_s


async def settle(*, max_turns: int = 10_000) -> None:
    """Let the event loop run until every other task waits (on a timer, a future, an event).

    It reads the loop's own queue of ready callbacks (asyncio's ``_ready``: there is no public
    "idle" signal) rather than yielding a guessed number of times, so a chain of wake-ups of
    any length completes before the caller goes on. I/O and the loop's own timers are not
    waited for: this is for code whose only time is a :class:`ManualClock`.
    """
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    if ready is None:
        raise RuntimeError("settle() needs asyncio's own event loop (it reads its ready queue)")
    for _ in range(max_turns):
        await asyncio.sleep(0)
        if not ready:
            return
    raise AssertionError(f"the event loop was still busy after {max_turns} turns")
