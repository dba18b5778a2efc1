"""Where the HTTP layer reads the time and sets its timers.

Every timeout of the layer (a slow head, a slow body, an idle connection, a client not reading
its answers, the lingering close, the graceful close's deadline) is measured on one
:class:`Clock`. In production it is the event loop itself (``loop.time``, ``loop.call_later``:
the connection holds the loop's bound ``time`` method, so reading the clock costs what it cost
before). Tests pass a clock they move by hand, so that a timeout is exercised in microseconds
and at an exact instant rather than by sleeping past it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A callback set for later (an :class:`asyncio.TimerHandle` in production)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The subset of :class:`asyncio.AbstractEventLoop` the HTTP layer keeps time with."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], object], /) -> Timer: ...
