"""Requests- and tokens-per-minute budgets per provider, spent before the provider says 429.

Each limit is a sliding window: what was admitted in the last minute (plus a second's margin
for a request's way to the provider), entry by entry. A call takes one request and its
estimated tokens (prompt characters / 4 plus ``max_tokens``: providers count the completion
allowance against TPM too) and waits, in arrival order, until both windows have room for
it. The usage the provider returns corrects the call's entry, so the window holds what was
really spent, as the provider's does. A 429 pauses the whole provider until its reset time,
so the other calls in flight do not walk into the same wall.

Why a window and not a token bucket: a bucket holding a minute's allowance lets a full minute
through at once and then refills, so in its first minute it admits twice the limit; a provider
that counts a sliding minute answers the excess 429 (bench/ai_budget before this change: 29.3 %
of the calls, at 81.6 % of the limit; after: none, at 99 %). A sliding minute of the limit
never exceeds it however the provider counts: a sliding minute, a fixed minute (inside any
sliding one), or a bucket of a minute's size refilled continuously (Anthropic's words).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from schemas.config_ai import BudgetConfig

Clock = Callable[[], float]
# A minute, plus a second's margin: the provider starts counting a request when it arrives,
# and entries here must not leave the window before they leave the provider's.
WINDOW_S = 61.0


@dataclass
class _Entry:
    at: float
    amount: float


class _Window:
    """What one limit admitted in the last ``WINDOW_S`` seconds."""

    def __init__(self, per_window: int) -> None:
        self.limit = float(per_window)
        self.entries: deque[_Entry] = deque()
        self.used = 0.0
        # Entries not corrected yet, by the amount they were admitted with: the oldest is
        # taken first (calls of equal estimate are interchangeable for the sum).
        self.open: defaultdict[float, deque[_Entry]] = defaultdict(deque)

    def expire(self, now: float) -> None:
        horizon = now - WINDOW_S
        entries = self.entries
        while entries and entries[0].at <= horizon:
            self.used -= entries.popleft().amount

    def wait_s(self, now: float, amount: float) -> float:
        """Seconds until ``amount`` fits (an amount over the limit: once the window is empty)."""
        excess = self.used + min(amount, self.limit) - self.limit
        if excess <= 0:
            return 0.0
        freed = 0.0
        for entry in self.entries:
            freed += entry.amount
            if freed >= excess:
                return max(0.0, entry.at + WINDOW_S - now)
        # Only corrections (calls in flight) can free the rest: wait for one.
        return WINDOW_S

    def take(self, now: float, amount: float) -> _Entry:
        entry = _Entry(now, amount)
        self.entries.append(entry)
        self.used += amount
        return entry

    def correct(self, estimated: float, actual: float, now: float) -> None:
        waiting = self.open.get(estimated)
        horizon = now - WINDOW_S
        # Entries that left the window uncorrected (their call was cancelled) are dropped.
        while waiting and waiting[0].at <= horizon:
            waiting.popleft()
        if not waiting:
            self.open.pop(estimated, None)
            return
        entry = waiting.popleft()
        if not waiting:
            del self.open[estimated]
        self.used += actual - entry.amount
        entry.amount = actual


class RateBudget:
    def __init__(self, config: BudgetConfig, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        rpm, tpm = config.requests_per_minute, config.tokens_per_minute
        self._requests = _Window(rpm) if rpm else None
        self._tokens = _Window(tpm) if tpm else None
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()  # set by a correction that gave tokens back

    def _wait_s(self, tokens: int) -> float:
        now = self._clock()
        waits = [self._paused_until - now]
        for window, amount in ((self._requests, 1), (self._tokens, tokens)):
            if window is not None:
                window.expire(now)
                waits.append(window.wait_s(now, amount))
        return max(waits)

    async def acquire(self, tokens: int) -> float:
        """Take one request and ``tokens``; returns the seconds waited for them."""
        waited_s = 0.0
        async with self._lock:  # one waiter at a time: first come, first served
            while (pause_s := self._wait_s(tokens)) > 0:
                started = self._clock()
                self._changed.clear()
                if self._paused_until > started:
                    await asyncio.sleep(pause_s)
                else:
                    # Room comes back when entries age out, or earlier when a call in
                    # flight is corrected down (its max_tokens given back).
                    await self._sleep_or_change(pause_s)
                waited_s += max(0.0, self._clock() - started)
            now = self._clock()
            if self._requests is not None:
                self._requests.take(now, 1)
            if self._tokens is not None:
                entry = self._tokens.take(now, tokens)
                self._tokens.open[float(tokens)].append(entry)
        return waited_s

    async def _sleep_or_change(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
        woken = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait((sleeper, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeper, woken):
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    def correct(self, estimated: int, actual: int) -> None:
        """Give back what the estimate took too much, or take what it missed."""
        if self._tokens is not None:
            self._tokens.correct(float(estimated), float(actual), self._clock())
            if actual < estimated:
                self._changed.set()

    def pause(self, seconds: float) -> None:
        """No call starts for ``seconds`` (the provider's rate limit has not reset yet)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def tokens_available(self) -> float | None:
        if self._tokens is None:
            return None
        self._tokens.expire(self._clock())
        return self._tokens.limit - self._tokens.used
