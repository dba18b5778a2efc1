"""Per-source token buckets: the gateway's answer to a sender (or attacker) posting too fast.

One bucket per source and gateway process: ``burst`` requests at once, refilled continuously at
``requests_per_s``. Running N gateway instances behind a load balancer allows N times the rate;
size the limit per instance. An empty bucket answers 429 with ``Retry-After`` = the whole
seconds until the next token, so well-behaved senders back off exactly as long as needed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from schemas.config_sources import RateLimitConfig, SourceConfig


class TokenBucket:
    """A token bucket on the monotonic clock; not thread-safe (one event loop owns it)."""

    __slots__ = ("_clock", "_tokens", "_updated_s", "burst", "rate_per_s")

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated_s = clock()

    def take(self) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is available."""
        now = self._clock()
        elapsed = max(0.0, now - self._updated_s)
        self._updated_s = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_s


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` takes whole seconds; round up so a sender never comes back too early."""
    return str(max(1, math.ceil(wait_s)))


class RateLimiter:
    """The buckets of every source that has a ``rate_limit``."""

    def __init__(
        self, sources: Iterable[SourceConfig], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        for source in sources:
            limit: RateLimitConfig | None = source.rate_limit
            if limit is not None:
                self._buckets[source.name] = TokenBucket(
                    limit.requests_per_s, limit.burst, clock=clock
                )

    def take(self, source: str) -> float:
        """0.0 when ``source`` may proceed, else the seconds to wait."""
        bucket = self._buckets.get(source)
        return 0.0 if bucket is None else bucket.take()
