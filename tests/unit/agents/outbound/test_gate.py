"""The outage gate: one probe per backoff while the target is down, then everyone resumes;
permanent errors and a record's own repeated failures end in RetriesExhausted.

Time is a :class:`~tests.support.clock.ManualClock` that :meth:`~ManualClock.run` moves from
timer to timer only once every task waits, so each call to the target is logged at the exact
instant the gate let it through and the tests compare those instants to the value: no sleep,
no wall-clock bound. All durations are binary fractions, so the sums are exact. The gate adds
no jitter to its backoff, so there is none to bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from agents.outbound.gate import OutageGate
from agents.outbound.retry import RetriesExhausted
from schemas.errors import PermanentRemoteError, RetriableRemoteError
from tests.support.clock import ManualClock

T0_S = 1000.0  # the clock's reading when a test starts
LATENCY_S = 0.25  # how long the target takes to answer, on the clock


def _gate(clock: ManualClock, *, backoff_s: float = 0.5, backoff_max_s: float = 8.0) -> OutageGate:
    return OutageGate("sink test", backoff_s=backoff_s, backoff_max_s=backoff_max_s, clock=clock)


class Target:
    """Answers after ``latency_s`` on the clock: a retriable 503 (with ``retry_after_s`` as its
    Retry-After) to the calls numbered in ``down`` (from 1), 200 to the others.

    Logs when each call began, and counts the calls in flight that began while the gate was
    closed: during an outage only the probe may be out.
    """

    def __init__(
        self,
        clock: ManualClock,
        gate: OutageGate,
        down: Iterable[int] = (),
        *,
        retry_after_s: float | None = None,
        latency_s: float = LATENCY_S,
    ) -> None:
        self.clock = clock
        self.gate = gate
        self.down = set(down)
        self.retry_after_s = retry_after_s
        self.latency_s = latency_s
        self.began_s: list[float] = []
        self.in_flight_while_closed = 0
        self.most_in_flight_while_closed = 0

    async def __call__(self) -> int:
        self.began_s.append(self.clock.time())
        number = len(self.began_s)
        closed = not self.gate.is_open
        self.in_flight_while_closed += closed
        self.most_in_flight_while_closed = max(
            self.most_in_flight_while_closed, self.in_flight_while_closed
        )
        try:
            await self.clock.sleep(self.latency_s)
        finally:
            self.in_flight_while_closed -= closed
        if number in self.down:
            raise RetriableRemoteError(
                "503", stage="sink", status=503, retry_after_s=self.retry_after_s
            )
        return 200


async def _run(clock: ManualClock, *tasks: asyncio.Task[tuple[int, int]]) -> list[int]:
    """Run the tasks to their end on the clock; the attempts each took."""
    await clock.run(lambda: all(task.done() for task in tasks))
    results = [task.result() for task in tasks]
    assert [status for status, _ in results] == [200] * len(tasks)
    return [attempts for _, attempts in results]


async def test_success_passes_straight_through() -> None:
    clock = ManualClock(T0_S)
    gate = _gate(clock)
    target = Target(clock, gate)
    assert await _run(clock, asyncio.create_task(gate.call(target, max_attempts=3))) == [1]
    assert target.began_s == [T0_S]
    assert gate.is_open
    assert gate.pauses == 0


async def test_a_permanent_error_is_not_retried() -> None:
    clock = ManualClock(T0_S)
    gate = _gate(clock)
    calls = 0

    async def refused() -> int:
        nonlocal calls
        calls += 1
        raise PermanentRemoteError("422", stage="sink", status=422)

    record = asyncio.create_task(gate.call(refused, max_attempts=5))
    await clock.run(record.done)  # a retry would wait on the clock: run it, don't hang
    with pytest.raises(RetriesExhausted) as caught:
        record.result()
    assert calls == 1
    assert caught.value.attempts == 1
    assert isinstance(caught.value.last, PermanentRemoteError)
    assert gate.is_open  # the target is fine; the record was wrong
    assert clock.next_due_s() is None  # and nothing waits to retry it


async def test_an_outage_costs_one_probe_per_backoff_not_one_call_per_record() -> None:
    clock = ManualClock(T0_S)
    gate = _gate(clock, backoff_s=0.5, backoff_max_s=0.5)  # held (doubling has its own test)
    target = Target(clock, gate, down=range(1, 14))  # 10 first tries, then 3 probes fail
    tasks = [asyncio.create_task(gate.call(target, max_attempts=2)) for _ in range(10)]
    attempts = await _run(clock, *tasks)
    failed_s = T0_S + LATENCY_S  # all 10 first tries fail together; the first closes the gate
    probes_s = [failed_s + 0.5, failed_s + 0.5 + 0.75, failed_s + 0.5 + 1.5, failed_s + 0.5 + 2.25]
    reopened_s = probes_s[-1] + LATENCY_S  # the 4th probe succeeds: the 9 others go
    assert target.began_s == [T0_S] * 10 + probes_s + [reopened_s] * 9
    assert target.most_in_flight_while_closed == 1
    assert gate.pauses == 1
    assert gate.is_open
    assert gate.consecutive_failures == 0
    # No record was dead-lettered for the outage, though the probe took 5 attempts (max 2).
    assert sorted(attempts) == [2] * 9 + [5]


async def test_only_one_caller_probes_even_when_the_probe_outlasts_the_backoff() -> None:
    # Each call takes 2 s, the backoff 0.5 s: the next retry time passes while the probe is
    # out, and the 3 others must go on waiting for its answer, not probe at that time too.
    clock = ManualClock(T0_S)
    gate = _gate(clock, backoff_s=0.5)
    target = Target(clock, gate, down=range(1, 5), latency_s=2.0)
    tasks = [asyncio.create_task(gate.call(target, max_attempts=1)) for _ in range(4)]
    await _run(clock, *tasks)
    probe_s = T0_S + 2.0 + 0.5
    assert target.began_s == [T0_S] * 4 + [probe_s] + [probe_s + 2.0] * 3
    assert target.most_in_flight_while_closed == 1


async def test_a_caller_arriving_while_closed_waits_for_the_probe() -> None:
    clock = ManualClock(T0_S)
    gate = _gate(clock, backoff_s=0.5)
    target = Target(clock, gate, down=[1])
    first = asyncio.create_task(gate.call(target, max_attempts=1))
    await clock.run(lambda: not gate.is_open)
    assert clock.now_s == T0_S + LATENCY_S  # closed by the first failure
    clock.advance(0.25)  # halfway to the probe
    later = asyncio.create_task(gate.call(target, max_attempts=1))
    assert await _run(clock, first, later) == [2, 1]
    probe_s = T0_S + LATENCY_S + 0.5
    # The newcomer called neither on arrival nor at the probe time, but once the probe answered.
    assert target.began_s == [T0_S, probe_s, probe_s + LATENCY_S]
    assert target.most_in_flight_while_closed == 1


def test_pause_honours_retry_after_and_doubles_otherwise() -> None:
    gate = OutageGate("sink test", backoff_s=0.5, backoff_max_s=4.0)
    told = RetriableRemoteError("429", status=429, retry_after_s=3.0)
    assert gate.pause_s(told) == 3.0
    assert gate.pause_s(RetriableRemoteError("429", status=429, retry_after_s=60.0)) == 4.0
    plain = RetriableRemoteError("503", status=503)
    pauses = []
    for failures in (1, 2, 3, 4, 5):
        gate.consecutive_failures = failures
        pauses.append(gate.pause_s(plain))
    assert pauses == [0.5, 1.0, 2.0, 4.0, 4.0]


@pytest.mark.parametrize(
    ("backoff_s", "retry_after_s", "pause_s"),
    [
        (0.5, 3.0, 3.0),  # longer than the backoff
        (4.0, 0.75, 0.75),  # shorter than the backoff
        (0.5, 120.0, 8.0),  # longer than the longest pause: capped at backoff_max_s
    ],
)
async def test_retry_after_sets_the_probe_time(
    backoff_s: float, retry_after_s: float, pause_s: float
) -> None:
    clock = ManualClock(T0_S)
    gate = _gate(clock, backoff_s=backoff_s, backoff_max_s=8.0)
    target = Target(clock, gate, down=[1], retry_after_s=retry_after_s)
    assert await _run(clock, asyncio.create_task(gate.call(target, max_attempts=1))) == [2]
    assert target.began_s == [T0_S, T0_S + LATENCY_S + pause_s]


async def test_the_backoff_doubles_up_to_its_cap_and_restarts_after_a_success() -> None:
    clock = ManualClock(T0_S)
    gate = _gate(clock, backoff_s=0.5, backoff_max_s=4.0)
    target = Target(clock, gate, down=[*range(1, 8), 9])  # 7 failures, a success, a failure
    assert await _run(clock, asyncio.create_task(gate.call(target, max_attempts=1))) == [8]
    assert await _run(clock, asyncio.create_task(gate.call(target, max_attempts=1))) == [2]
    began_s = target.began_s
    # How long each retry waited after the failure before it; call 9 began as call 8 ended.
    waits_s = [began_s[n] - began_s[n - 1] - LATENCY_S for n in range(1, len(began_s))]
    assert waits_s == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 0.0, 0.5]
    assert gate.pauses == 2


async def test_a_record_failing_while_others_succeed_is_its_own_problem() -> None:
    clock = ManualClock(T0_S)
    gate = _gate(clock, backoff_s=0.5)
    healthy = Target(clock, gate)
    poisoned = Target(clock, gate, down=range(1, 100), latency_s=1.0)  # others succeed meanwhile
    stop = False

    async def traffic() -> None:
        while not stop:
            await gate.call(healthy, max_attempts=1)

    background = asyncio.create_task(traffic())
    record = asyncio.create_task(gate.call(poisoned, max_attempts=3))
    await clock.run(record.done)
    stop = True
    await clock.run(background.done)
    with pytest.raises(RetriesExhausted) as caught:
        record.result()
    assert caught.value.attempts == 3
    # Retried after its own pause (the backoff: the target is not down), never held by the gate.
    assert poisoned.began_s == [T0_S, T0_S + 1.5, T0_S + 3.0]
    # The others went on back to back, never paused, up to the instant the record gave up.
    assert healthy.began_s == [T0_S + n * LATENCY_S for n in range(17)]
    assert gate.pauses == 0  # never taken for an outage
    assert gate.is_open


def test_the_pause_stays_capped_after_thousands_of_failed_probes() -> None:
    # Hours of outage at the cap: the doubling must not overflow (2.0**1024 raised before).
    gate = OutageGate("sink test", backoff_s=0.5, backoff_max_s=4.0)
    gate.consecutive_failures = 5000
    assert gate.pause_s(RetriableRemoteError("503", status=503)) == 4.0
