"""Where time is read and timers are set: the event loop's ``time`` and ``call_later``.

Every timeout of the HTTP layer (a slow head, a slow body, an idle connection, a client not
reading its answers, the lingering close, the graceful close's deadline) and the sinks' outage
gate (probe times, Retry-After) is measured on one :class:`Clock`. In production it is the
event loop itself, so reading it costs what ``loop.time()`` cost before. Tests pass a clock they
move by hand (tests/support/clock.py), so that a timeout is exercised at an exact instant
rather than by sleeping past it. A protocol only, in ``schemas`` so that both layers can name it.
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
