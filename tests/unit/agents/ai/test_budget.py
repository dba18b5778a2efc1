"""The provider budget's sliding minute, on a fake clock (no real sleeping)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from agents.ai.budget import WINDOW_S, RateBudget
from schemas.config_ai import BudgetConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A fake clock that the budget's sleeps advance."""
    fake = Clock()

    async def sleep(seconds: float) -> None:
        fake.now += seconds

    monkeypatch.setattr("agents.ai.budget.asyncio.sleep", sleep)
    return fake


async def test_a_minute_admits_the_limit_and_then_waits_for_the_first_to_age_out(
    clock: Clock,
) -> None:
    budget = RateBudget(BudgetConfig(tokens_per_minute=1000), clock=clock)
    for _ in range(4):
        assert await budget.acquire(250) == 0
        clock.now += 5
    # A token bucket refilled at 1000/min would admit this after 15 s; the window waits until
    # the first call leaves it (a minute after it, plus the margin).
    assert await budget.acquire(250) == pytest.approx(WINDOW_S - 20)
    assert budget.tokens_available == pytest.approx(0)


async def test_a_correction_wakes_the_waiter_before_anything_ages_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    forever: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def sleep(seconds: float) -> None:
        if seconds > 0:
            await forever  # only a correction can end the budget's wait

    monkeypatch.setattr("agents.ai.budget.asyncio.sleep", sleep)
    budget = RateBudget(BudgetConfig(tokens_per_minute=1000), clock=clock)
    await budget.acquire(900)  # in flight: prompt + max_tokens reserved
    waiter = asyncio.create_task(budget.acquire(600))
    await asyncio.sleep(0)
    assert not waiter.done()
    budget.correct(900, 300)  # answered: 600 tokens given back
    assert await asyncio.wait_for(waiter, 5) == 0  # no time passed on the fake clock
    assert budget.tokens_available == pytest.approx(100)


async def test_corrections_go_to_the_oldest_open_call_of_that_estimate(clock: Clock) -> None:
    budget = RateBudget(BudgetConfig(tokens_per_minute=10_000), clock=clock)
    await budget.acquire(500)
    clock.now += 30
    await budget.acquire(500)
    budget.correct(500, 100)  # the first call's answer
    clock.now += 31  # the first call leaves the window: 100 with it, 500 stay
    assert budget.tokens_available == pytest.approx(9500)
    budget.correct(500, 200)
    assert budget.tokens_available == pytest.approx(9800)
    budget.correct(500, 50)  # no open call left of that estimate: nothing changes
    assert budget.tokens_available == pytest.approx(9800)


async def test_requests_per_minute_is_a_sliding_minute_too(clock: Clock) -> None:
    budget = RateBudget(BudgetConfig(requests_per_minute=3), clock=clock)
    for _ in range(3):
        assert await budget.acquire(10) == 0
        clock.now += 1
    assert await budget.acquire(10) == pytest.approx(WINDOW_S - 3)


async def test_a_pause_after_a_429_holds_every_call(clock: Clock) -> None:
    budget = RateBudget(BudgetConfig(tokens_per_minute=10_000), clock=clock)
    budget.pause(7.5)
    assert await budget.acquire(1) == pytest.approx(7.5)


async def test_five_minutes_of_calls_never_exceed_any_minute_and_use_nearly_all_of_it(
    clock: Clock,
) -> None:
    """Calls of random size, each answered 0.4 s later with a random share of its estimate:
    in every 60 s window the tokens the calls finally used stay within the limit, and the
    whole run uses more than 95 % of it."""
    limit, rng = 20_000, random.Random(7)  # noqa: S311 - test data
    budget = RateBudget(BudgetConfig(tokens_per_minute=limit), clock=clock)
    spent: list[tuple[float, int]] = []  # (admitted at, tokens finally used)
    start = clock.now
    while clock.now - start < 300:
        estimate = rng.randint(100, 1500)
        await budget.acquire(estimate)
        admitted_at = clock.now
        clock.now += 0.4
        used = int(estimate * rng.uniform(0.2, 1.0))
        budget.correct(estimate, used)
        spent.append((admitted_at, used))
    worst: Any = max(sum(used for at, used in spent if t <= at < t + 60) for t, _ in spent)
    assert worst <= limit
    total = sum(used for _, used in spent)
    assert total / (limit * (clock.now - start) / 60) > 0.95
