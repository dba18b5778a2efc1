"""Retry with exponential backoff and full jitter, honouring the server's Retry-After.

Only errors that say they are retriable (``HookstreamError.retriable``) are retried; anything
else fails at once. The outcome records the attempts and the first and last failure times,
which the dead letter carries.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from schemas.errors import HookstreamError, RemoteError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0

    def delay_s(self, attempt: int, error: BaseException) -> float:
        """Pause before attempt ``attempt + 1``: the server's wish, else jittered backoff."""
        if isinstance(error, RemoteError) and error.retry_after_s is not None:
            return min(error.retry_after_s, self.backoff_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_s * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


class RetriesExhausted(HookstreamError):
    """The last error of an operation that failed for good, with its attempt history."""

    def __init__(
        self,
        last: BaseException,
        attempts: int,
        first_failure_at: datetime,
        last_failure_at: datetime,
    ) -> None:
        self.last = last
        self.attempts = attempts
        self.first_failure_at = first_failure_at
        self.last_failure_at = last_failure_at
        super().__init__(f"{type(last).__name__}: {last} (after {attempts} attempts)")


async def with_retries(
    operation: Callable[[int], Awaitable[T]], policy: RetryPolicy, *, what: str
) -> tuple[T, int]:
    """Run ``operation(attempt)`` until it succeeds; return (result, attempts used)."""
    first_failure_at: datetime | None = None
    attempt = 1
    while True:
        try:
            return await operation(attempt), attempt
        except HookstreamError as exc:
            now = datetime.now(UTC)
            first_failure_at = first_failure_at or now
            if not exc.retriable or attempt >= policy.max_attempts:
                raise RetriesExhausted(exc, attempt, first_failure_at, now) from exc
            pause_s = policy.delay_s(attempt, exc)
            log.info(
                "%s failed (attempt %d/%d): %s; retrying in %.2f s",
                what,
                attempt,
                policy.max_attempts,
                exc,
                pause_s,
            )
            await asyncio.sleep(pause_s)
            attempt += 1
