"""The outage gate: when a target is down, its callers pause instead of spinning.

Shared by the sinks (one gate per sink: the target is the CRM, Slack, a database) and the AI
stage (one gate per flow: the target is the flow's provider chain, see
:mod:`agents.stages.ai`). The text below speaks of a sink; a flow's events behave the same.

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

With ``max_outage_s`` set, an outage has an end: once the gate has been closed that long, the
callers waiting on it fail with :class:`OutageTooLong` (dead-lettered by their stage), and so
does every newcomer until a probe succeeds; the probes go on, one per backoff, meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from agents.outbound.retry import RetriesExhausted
from schemas.clock import Clock, Timer
from schemas.errors import HookstreamError, RemoteError, StageError

log = logging.getLogger(__name__)
T = TypeVar("T")


class OutageTooLong(StageError):
    """The target stayed unavailable for longer than the configured ``max_outage_s``; not
    retriable: the record is dead-lettered, to be redriven once the target is back."""


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class OutageGate:
    def __init__(
        self,
        what: str,
        *,
        backoff_s: float,
        backoff_max_s: float,
        clock: Clock | None = None,
        max_outage_s: float | None = None,
        on_pause: Callable[[str], None] | None = None,
        on_resume: Callable[[float], None] | None = None,
    ) -> None:
        """``clock``: what the backoff is measured on; by default the running event loop (read
        at each use, so the gate may be built before the loop runs). ``max_outage_s``: how
        long callers wait on a closed gate before failing with :class:`OutageTooLong` (None:
        for ever). ``on_pause(cause)`` and ``on_resume(paused_s)`` are told when the gate
        closes and opens again (for metrics)."""
        self.what = what
        self.backoff_s = max(backoff_s, 0.05)
        self.backoff_max_s = max(backoff_max_s, self.backoff_s)
        self.max_outage_s = max_outage_s
        self._clock = clock
        self._on_pause = on_pause
        self._on_resume = on_resume
        self._open = True
        self._probing = False
        self._retry_at_s = 0.0
        self._closed_at_s = 0.0
        # Callers waiting for the gate to change, in arrival order (the first probes first).
        self._waiters: dict[asyncio.Future[None], None] = {}
        # The tasks held at the closed gate (not the probe): they have sent nothing yet.
        self.waiting: set[asyncio.Task[Any]] = set()
        # Told whenever a caller is about to wait (agents.faust_app.release_when_waiting).
        self.on_wait: Callable[[], object] | None = None
        self.consecutive_failures = 0
        self.successes = 0
        self.pauses = 0
        self.probes = 0
        self.last_error: BaseException | None = None

    @property
    def is_open(self) -> bool:
        return self._open

    def pause_s(self, error: BaseException) -> float:
        if isinstance(error, RemoteError) and error.retry_after_s is not None:
            return min(max(error.retry_after_s, 0.05), self.backoff_max_s)
        # Capped: 2.0**1024 overflows, and an outage of ~1,000 probes is hours, not a bug.
        exponent = min(max(self.consecutive_failures - 1, 0), 32)
        return min(self.backoff_max_s, self.backoff_s * 2.0**exponent)

    async def call(
        self, operation: Callable[[], Awaitable[T]], *, max_attempts: int
    ) -> tuple[T, int]:
        """Run ``operation`` through the gate until it succeeds; return (result, attempts).

        Raises :class:`RetriesExhausted` for a permanent error, or after ``max_attempts``
        failures of this record while the target served others.
        """

        async def attempt(_probe: bool) -> T:
            return await operation()

        return await self.call_probing(attempt, max_attempts=max_attempts)

    async def call_probing(
        self, operation: Callable[[bool], Awaitable[T]], *, max_attempts: int
    ) -> tuple[T, int]:
        """:meth:`call`, telling ``operation`` whether it is the probe of a closed gate (the
        AI stage's probe calls past open breakers, once per provider)."""
        attempts = own_failures = 0
        first_failure_at: datetime | None = None
        while True:
            try:
                probe = await self._admit()
            except OutageTooLong as exc:
                now = datetime.now(UTC)
                raise RetriesExhausted(exc, attempts, first_failure_at or now, now) from None
            seen_successes = self.successes
            attempts += 1
            try:
                result = await operation(probe)
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
                    await self.sleep(self.pause_s(exc))
                    continue
                self._failed(probe, exc)
                continue
            except BaseException:
                self._release(probe)
                raise
            self._succeeded(probe)
            return result, attempts

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the gate's clock (a retry's backoff, measured like the gate's)."""
        await self._wait(seconds, notified=False)

    @property
    def clock(self) -> Clock:
        return self._clock if self._clock is not None else asyncio.get_running_loop()

    async def _admit(self) -> bool:
        """Wait until the gate is open (False) or this caller is the probe (True); raise
        :class:`OutageTooLong` once the gate has been closed for ``max_outage_s``."""
        while True:
            if self._open:
                return False
            now_s = self.clock.time()
            if not self._probing and now_s >= self._retry_at_s:
                self._probing = True
                self.probes += 1
                return True
            timeout_s = None if self._probing else self._retry_at_s - now_s
            if self.max_outage_s is not None:
                left_s = self._closed_at_s + self.max_outage_s - now_s
                if left_s <= 0:
                    raise OutageTooLong(
                        f"{self.what}: unavailable for {now_s - self._closed_at_s:.1f} s, "
                        f"longer than max_outage_s ({self.max_outage_s:g} s); last error: "
                        f"{self.last_error}"
                    )
                timeout_s = left_s if timeout_s is None else min(timeout_s, left_s)
            # While a probe is out, its outcome is what everyone waits for; else the retry time.
            current = asyncio.current_task()
            if current is not None:
                self.waiting.add(current)
            try:
                await self._wait(timeout_s, notified=True)
            finally:
                if current is not None:
                    self.waiting.discard(current)

    async def _wait(self, timeout_s: float | None, *, notified: bool) -> None:
        """Until ``timeout_s`` has passed on the clock or, if ``notified``, the gate changes."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer: Timer | None = None
        if timeout_s is not None:
            timer = self.clock.call_later(timeout_s, functools.partial(_wake, waiter))
        if notified:
            self._waiters[waiter] = None
        try:
            if self.on_wait is not None:
                self.on_wait()  # may cancel this task (a release): raised by the await below
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
            paused_s = self.clock.time() - self._closed_at_s
            log.warning(
                "%s: target answers again after %.1f s paused (%d probes); resuming",
                self.what,
                paused_s,
                self.probes,
            )
            self._open = True
            if self._on_resume is not None:
                self._on_resume(paused_s)
        if probe:
            self._probing = False
        self._notify()

    def _failed(self, probe: bool, error: HookstreamError) -> None:
        if not self._open and not probe:
            return  # closed already by an earlier failure; just wait for the probe
        self.consecutive_failures += 1
        self.last_error = error
        pause_s = self.pause_s(error)
        now_s = self.clock.time()
        self._retry_at_s = now_s + pause_s
        if self._open:
            self.pauses += 1
            self.probes = 0
            self._closed_at_s = now_s
            log.warning(
                "%s: target unavailable (%s: %s); pausing, next try in %.1f s",
                self.what,
                type(error).__name__,
                error,
                pause_s,
            )
            if self._on_pause is not None:
                self._on_pause(type(error).__name__)
        else:
            log.info("%s: still unavailable (%s); next try in %.1f s", self.what, error, pause_s)
        self._open = False
        self._probing = False
        self._notify()
