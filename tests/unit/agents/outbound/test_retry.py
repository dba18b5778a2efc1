"""Retries: which errors are retried, how often, how long between, and the failure history."""

from __future__ import annotations

import logging
import random

import pytest

from agents.outbound.retry import RetriesExhausted, RetryPolicy, with_retries
from schemas.errors import (
    InvalidModelOutput,
    PermanentRemoteError,
    RetriableRemoteError,
    TemplateError,
)

FAST = RetryPolicy(max_attempts=4, backoff_s=0, backoff_max_s=0)


class Flaky:
    """Fails with the given errors in turn, then answers ``"ok"``; records attempt numbers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.attempts: list[int] = []

    async def __call__(self, attempt: int) -> str:
        self.attempts.append(attempt)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_success_on_first_attempt() -> None:
    operation = Flaky()
    assert await with_retries(operation, FAST, what="op") == ("ok", 1)
    assert operation.attempts == [1]


async def test_retriable_errors_are_retried_until_success() -> None:
    operation = Flaky(RetriableRemoteError("503"), InvalidModelOutput("not json"))
    assert await with_retries(operation, FAST, what="op") == ("ok", 3)
    assert operation.attempts == [1, 2, 3]


async def test_retriable_errors_exhaust_after_max_attempts() -> None:
    errors = [RetriableRemoteError(f"HTTP 503 #{n}", status=503) for n in range(1, 10)]
    operation = Flaky(*errors)
    with pytest.raises(RetriesExhausted) as info:
        await with_retries(operation, FAST, what="op")
    exhausted = info.value
    assert operation.attempts == [1, 2, 3, 4]
    assert exhausted.attempts == 4
    assert exhausted.last is errors[3]
    assert exhausted.__cause__ is errors[3]
    assert exhausted.first_failure_at <= exhausted.last_failure_at
    assert exhausted.first_failure_at.tzinfo is not None
    assert str(exhausted) == "RetriableRemoteError: HTTP 503 #4 (after 4 attempts)"
    assert not exhausted.retriable


async def test_first_failure_time_is_that_of_the_first_attempt() -> None:
    policy = RetryPolicy(max_attempts=2, backoff_s=0, backoff_max_s=1)
    operation = Flaky(RetriableRemoteError("a", retry_after_s=0.02), RetriableRemoteError("b"))
    with pytest.raises(RetriesExhausted) as info:
        await with_retries(operation, policy, what="op")
    elapsed = info.value.last_failure_at - info.value.first_failure_at
    assert elapsed.total_seconds() >= 0.015


@pytest.mark.parametrize(
    "error",
    [PermanentRemoteError("HTTP 400", status=400), TemplateError("no field 'data.x'")],
)
async def test_permanent_error_is_not_retried(error: Exception) -> None:
    operation = Flaky(error)
    with pytest.raises(RetriesExhausted) as info:
        await with_retries(operation, FAST, what="op")
    assert operation.attempts == [1]
    assert info.value.attempts == 1
    assert info.value.last is error
    assert info.value.first_failure_at == info.value.last_failure_at


async def test_errors_outside_the_tree_propagate_unchanged() -> None:
    operation = Flaky(KeyError("bug"))
    with pytest.raises(KeyError):
        await with_retries(operation, FAST, what="op")
    assert operation.attempts == [1]


async def test_retry_after_is_honoured(caplog: pytest.LogCaptureFixture) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_s=0, backoff_max_s=30)
    error = RetriableRemoteError("HTTP 429", status=429, retry_after_s=0.01)
    assert policy.delay_s(1, error) == 0.01
    operation = Flaky(error)
    with caplog.at_level(logging.INFO, logger="agents.outbound.retry"):
        assert await with_retries(operation, policy, what="provider default") == ("ok", 2)
    messages = [r.getMessage() for r in caplog.records if r.name == "agents.outbound.retry"]
    assert messages == ["provider default failed (attempt 1/3): HTTP 429; retrying in 0.01 s"]


def test_retry_after_is_capped_by_backoff_max() -> None:
    policy = RetryPolicy(max_attempts=3, backoff_s=0.5, backoff_max_s=30)
    error = RetriableRemoteError("HTTP 503", status=503, retry_after_s=3600)
    assert policy.delay_s(1, error) == 30


def test_zero_retry_after_means_no_pause() -> None:
    policy = RetryPolicy(backoff_s=10, backoff_max_s=30)
    assert policy.delay_s(1, RetriableRemoteError("x", retry_after_s=0.0)) == 0.0


def test_backoff_without_retry_after_is_jittered_below_the_exponential_ceiling() -> None:
    random.seed(1234)
    policy = RetryPolicy(max_attempts=20, backoff_s=0.5, backoff_max_s=30)
    error = RetriableRemoteError("HTTP 503")
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)]:
        delays = [policy.delay_s(attempt, error) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # full jitter spreads over the whole range
        assert len(set(delays)) > 100


@pytest.mark.parametrize("attempt", [6, 7, 10, 20, 50])
def test_delay_is_bounded_by_backoff_max(attempt: int) -> None:
    random.seed(attempt)
    policy = RetryPolicy(max_attempts=50, backoff_s=0.5, backoff_max_s=3)
    delays = [policy.delay_s(attempt, InvalidModelOutput("x")) for _ in range(500)]
    assert all(0 <= d <= 3 for d in delays)
    assert max(delays) > 2  # the ceiling is backoff_max_s, not something smaller


def test_no_backoff_means_no_pause() -> None:
    assert FAST.delay_s(3, RetriableRemoteError("x")) == 0
