"""A circuit breaker per provider: stop calling a provider that keeps failing.

Closed: calls go through; ``failure_threshold`` consecutive failures (5xx, timeouts, connection
errors — not 429, which the budget handles, nor 4xx, which are the request's fault) open it.
Open: calls fail at once with :class:`~schemas.errors.CircuitOpen`, so the flow moves on to its
fallback instead of spending retries on a provider that is down. After ``open_s`` one trial call
is let through (half-open): success closes the breaker, failure opens it for another ``open_s``.

An open breaker never fails an event: it only says "skip this provider now". When every
provider of a flow is skipped or exhausted, the flow pauses on its outage gate
(:mod:`agents.outbound.gate`), and the gate's probe — one per backoff, usually far sooner than
``open_s`` — is let through as a trial (``before_call(force=True)``), so the first probe that
is answered closes the breaker and resumes the flow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from schemas.config_ai import BreakerConfig
from schemas.errors import CircuitOpen

Clock = Callable[[], float]


class BreakerState(IntEnum):
    """The values of the ``hookstream_ai_breaker_state`` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Clock = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._opened_until = 0.0
        self._trial_running = False

    def _set(self, state: BreakerState) -> None:
        if state != self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(state)

    def open_for_s(self) -> float:
        """Seconds until a trial call may go through (0 when calls may go now)."""
        if self.state == BreakerState.CLOSED:
            return 0.0
        if self.state == BreakerState.HALF_OPEN:
            return self.config.open_s if self._trial_running else 0.0
        return max(0.0, self._opened_until - self._clock())

    def is_open(self) -> bool:
        return self.open_for_s() > 0

    def before_call(self, *, force: bool = False) -> None:
        """Raise CircuitOpen unless a call may go now; moves open → half-open when due.

        ``force``: the call is a paused flow's probe, let through as a trial whatever the
        time (the flow's gate already limits probes to one per backoff)."""
        if self.state == BreakerState.CLOSED:
            return
        wait_s = self.open_for_s()
        if wait_s > 0 and not force:
            raise CircuitOpen(
                f"provider {self.name}: circuit open after {self.failures} consecutive "
                f"failures; next trial in {wait_s:.1f} s",
                stage="ai",
            )
        self._set(BreakerState.HALF_OPEN)
        self._trial_running = True

    def on_success(self) -> None:
        self.failures = 0
        self._trial_running = False
        self._set(BreakerState.CLOSED)

    def on_neutral(self) -> None:
        """The call ended in a way that says nothing about the provider's health (429, 4xx)."""
        self._trial_running = False

    def on_failure(self) -> None:
        self.failures += 1
        self._trial_running = False
        if self.state == BreakerState.HALF_OPEN or self.failures >= self.config.failure_threshold:
            self._opened_until = self._clock() + self.config.open_s
            self._set(BreakerState.OPEN)
