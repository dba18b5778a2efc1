"""Which asyncio event loop the long-running commands run on: uvloop where it is installed.

uvloop (libuv, in C) runs the loop's own bookkeeping (scheduling callbacks, waking on sockets,
writing to them) outside the interpreter. The gateway took it first; the worker, the sinks and
the batcher run on it too (issue 16: bench/results/pipeline.md measures their CPU per event on
each). uvloop is a dependency on every platform hookstream targets; where it is absent (Windows,
or an install without it) asyncio's own loop is used and nothing else changes.

The Faust processes get it as the default policy rather than one loop passed in: Faust's consumer
runs in a thread of its own with a loop it creates through :func:`asyncio.new_event_loop`, and
the policy is what makes that loop a uvloop one too (faust's ``worker --loop uvloop`` does the
same, through ``mode.loop.use``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor (for :class:`asyncio.Runner`), or None: asyncio's default."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a declared dependency; asyncio works too
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def use_fast_loop_policy() -> str:
    """Make every loop this process creates from now on a uvloop one (every thread's, Faust's
    consumer thread included), where uvloop is installed; returns the loop's name, for the
    start-up log. Call it before anything creates a loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a declared dependency; asyncio works too
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return f"uvloop {getattr(uvloop, '__version__', '')}".strip()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """:func:`asyncio.run` on a uvloop loop where uvloop is installed."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
