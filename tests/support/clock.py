"""A clock that moves only when a test moves it, for code that keeps time through an injected
:class:`streams.http.clock.Clock` (the HTTP layer).

With it a timeout fires at the instant the test chooses, in microseconds, and never by accident
on a slow machine: the test shows "not yet" just before a limit and "now" just after it, with no
sleep and no timed assertion. Timers run synchronously inside :meth:`ManualClock.advance`, in
the order they fall due, each with the clock reading its own due time (a sweep that re-arms
itself runs once per period crossed, as it would on the event loop).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class ManualTimer:
    due_s: float
    sequence: int  # timers due at the same instant run in the order they were set
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """``time()`` and ``call_later()`` like the event loop's; time passes in :meth:`advance`."""

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

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, running every timer that falls due on the way."""
        until_s = self.now_s + seconds
        while self._timers and self._timers[0].due_s <= until_s:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now_s = timer.due_s
            timer.callback()
        self.now_s = until_s
