"""The outage gate: when a sink's target is down, the sink pauses instead of spinning.

Every delivery of one sink passes through one gate. While the target answers, the gate is open
and deliveries run concurrently. The first retriable failure (5xx, 408/429, timeout, connection
refused, a database that is down) closes it: every delivery of the sink then waits, holding its
slot in the ordered runner, so the runner stops pulling from Kafka and nothing is committed past
the first undelivered record (backpressure, not loss). After the backoff — the server's
``Retry-After`` when it sent one, else doubling from ``worker.retry_backoff_s`` up to
``worker.retry_backoff_max_s`` — exactly one waiting delivery probes the target; its success
reopens the gate for all, its failure closes it for the next, longer, pause. An outage therefore
costs one request per backoff period, not one per waiting record, and a crash meanwhile simply
redoes the records after the last commit.

Time is read and waited on through a :class:`~schemas.clock.Clock`: in
production the running event loop (``loop.time``, ``loop.call_later``: the timers
``asyncio.sleep`` and ``asyncio.wait_for`` would set), in tests a clock moved by hand, so that a
probe's time is checked to the value rather than by sleeping through the backoff.

A record the target keeps refusing while it accepts others (a 5xx that is really about this
record) is not an outage: after ``max_attempts`` such failures it is dead-lettered.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from agents.outbound.retry import RetriesExhausted
from schemas.clock import Clock, Timer
from schemas.errors import HookstreamError, RemoteError

log = logging.getLogger(__name__)
T = TypeVar("T")


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class OutageGate:
    def __init__(
        self, what: str, *, backoff_s: float, backoff_max_s: float, clock: Clock | None = None
    ) -> None:
        """``clock``: what the backoff is measured on; by default the running event loop (read
        at each use, so the gate may be built before the loop runs)."""
        self.what = what
        self.backoff_s = max(backoff_s, 0.05)
        self.backoff_max_s = max(backoff_max_s, self.backoff_s)
        self._clock = clock
        self._open = True
        self._probing = False
        self._retry_at_s = 0.0
        # Callers waiting for the gate to change, in arrival order (the first probes first).
        self._waiters: dict[asyncio.Future[None], None] = {}
        self.consecutive_failures = 0
        self.successes = 0
        self.pauses = 0

    @property
    def is_open(self) -> bool:
        return self._open

    def pause_s(self, error: BaseException) -> float:
        if isinstance(error, RemoteError) and error.retry_after_s is not None:
            return min(max(error.retry_after_s, 0.05), self.backoff_max_s)
        exponent = max(self.consecutive_failures - 1, 0)
        return min(self.backoff_max_s, self.backoff_s * 2.0**exponent)

    async def call(
        self, operation: Callable[[], Awaitable[T]], *, max_attempts: int
    ) -> tuple[T, int]:
        """Run ``operation`` through the gate until it succeeds; return (result, attempts).

        Raises :class:`RetriesExhausted` for a permanent error, or after ``max_attempts``
        failures of this record while the target served others.
        """
        attempts = own_failures = 0
        first_failure_at: datetime | None = None
        while True:
            probe = await self._admit()
            seen_successes = self.successes
            attempts += 1
            try:
                result = await operation()
            except HookstreamError as exc:
                now = datetime.now(UTC)
                first_failure_at = first_failure_at or now
                if not exc.retriable:
                    self._release(probe)
                    raise RetriesExhausted(exc, attempts, first_failure_at, now) from exc
                if self.successes > seen_successes and self._open:
                    # The target served others meanwhile: this record's own problem.
                    own_failures += 1
                    self._release(probe)
                    if own_failures >= max_attempts:
                        raise RetriesExhausted(exc, attempts, first_failure_at, now) from exc
                    await self._wait(self.pause_s(exc), notified=False)
                    continue
                self._failed(probe, exc)
                continue
            except BaseException:
                self._release(probe)
                raise
            self._succeeded(probe)
            return result, attempts

    @property
    def clock(self) -> Clock:
        return self._clock if self._clock is not None else asyncio.get_running_loop()

    async def _admit(self) -> bool:
        """Wait until the gate is open (False) or this caller is the probe (True)."""
        while True:
            if self._open:
                return False
            now_s = self.clock.time()
            if not self._probing and now_s >= self._retry_at_s:
                self._probing = True
                return True
            # While a probe is out, its outcome is what everyone waits for; else the retry time.
            await self._wait(None if self._probing else self._retry_at_s - now_s, notified=True)

    async def _wait(self, timeout_s: float | None, *, notified: bool) -> None:
        """Until ``timeout_s`` has passed on the clock or, if ``notified``, the gate changes."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer: Timer | None = None
        if timeout_s is not None:
            timer = self.clock.call_later(timeout_s, functools.partial(_wake, waiter))
        if notified:
            self._waiters[waiter] = None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiters.pop(waiter, None)

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            _wake(waiter)

    def _release(self, probe: bool) -> None:
        if probe:
            self._probing = False
            self._notify()

    def _succeeded(self, probe: bool) -> None:
        self.successes += 1
        self.consecutive_failures = 0
        if not self._open:
            log.warning("%s: target answers again; resuming", self.what)
            self._open = True
        if probe:
            self._probing = False
        self._notify()

    def _failed(self, probe: bool, error: HookstreamError) -> None:
        if not self._open and not probe:
            return  # closed already by an earlier failure; just wait for the probe
        self.consecutive_failures += 1
        pause_s = self.pause_s(error)
        self._retry_at_s = self.clock.time() + pause_s
        if self._open:
            self.pauses += 1
            log.warning(
                "%s: target unavailable (%s); pausing, next try in %.1f s",
                self.what,
                error,
                pause_s,
            )
        else:
            log.info("%s: still unavailable (%s); next try in %.1f s", self.what, error, pause_s)
        self._open = False
        self._probing = False
        self._notify()
