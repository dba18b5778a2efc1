"""Requests- and tokens-per-minute budgets per provider, spent before the provider says 429.

Two token buckets (requests, tokens), each holding one minute's allowance and refilling
continuously. A call takes one request and its estimated tokens (prompt characters / 4 plus
``max_tokens``: providers count the completion allowance against TPM too) and waits, in
arrival order, until both buckets have them. The usage the provider returns corrects the
estimate, so the bucket tracks what was really spent. A 429 pauses the whole provider until
its reset time, so the other calls in flight do not walk into the same wall.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from schemas.config_ai import BudgetConfig

Clock = Callable[[], float]


class _Bucket:
    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` is available (amount capped at the capacity)."""
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing / self.rate_per_s)


class RateBudget:
    def __init__(self, config: BudgetConfig, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        now = clock()
        rpm, tpm = config.requests_per_minute, config.tokens_per_minute
        self._requests = _Bucket(rpm, now) if rpm else None
        self._tokens = _Bucket(tpm, now) if tpm else None
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def _wait_s(self, tokens: int) -> float:
        now = self._clock()
        waits = [self._paused_until - now]
        for bucket, amount in ((self._requests, 1), (self._tokens, tokens)):
            if bucket is not None:
                bucket.refill(now)
                waits.append(bucket.wait_s(amount))
        return max(waits)

    async def acquire(self, tokens: int) -> float:
        """Take one request and ``tokens``; returns the seconds waited for them."""
        waited_s = 0.0
        async with self._lock:  # one waiter at a time: first come, first served
            while (pause_s := self._wait_s(tokens)) > 0:
                await asyncio.sleep(pause_s)
                waited_s += pause_s
            if self._requests is not None:
                self._requests.level -= 1
            if self._tokens is not None:
                self._tokens.level -= tokens
        return waited_s

    def correct(self, estimated: int, actual: int) -> None:
        """Give back what the estimate took too much, or take what it missed."""
        if self._tokens is not None:
            self._tokens.level += estimated - actual

    def pause(self, seconds: float) -> None:
        """No call starts for ``seconds`` (the provider's rate limit has not reset yet)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def tokens_available(self) -> float | None:
        if self._tokens is None:
            return None
        self._tokens.refill(self._clock())
        return self._tokens.level
