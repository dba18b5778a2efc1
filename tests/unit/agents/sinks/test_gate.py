"""The outage gate: one probe per backoff while the target is down, then everyone resumes;
permanent errors and a record's own repeated failures end in RetriesExhausted."""

from __future__ import annotations

import asyncio

import pytest

from agents.outbound.retry import RetriesExhausted
from agents.sinks.gate import OutageGate
from schemas.errors import PermanentRemoteError, RetriableRemoteError


def _gate(**kwargs: float) -> OutageGate:
    return OutageGate("sink test", backoff_s=kwargs.get("backoff_s", 0.01), backoff_max_s=1.0)


class Target:
    """Down for the first ``down_for`` calls, then up; counts calls."""

    def __init__(self, down_for: int, retry_after_s: float | None = None) -> None:
        self.down_for = down_for
        self.retry_after_s = retry_after_s
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        number = self.calls
        await asyncio.sleep(0.001)  # in flight together, like real requests
        if number <= self.down_for:
            raise RetriableRemoteError(
                "503", stage="sink", status=503, retry_after_s=self.retry_after_s
            )
        return 200


async def test_success_passes_straight_through() -> None:
    gate = _gate()
    assert await gate.call(Target(0), max_attempts=3) == (200, 1)
    assert gate.is_open
    assert gate.pauses == 0


async def test_a_permanent_error_is_not_retried() -> None:
    gate = _gate()
    calls = 0

    async def refused() -> int:
        nonlocal calls
        calls += 1
        raise PermanentRemoteError("422", stage="sink", status=422)

    with pytest.raises(RetriesExhausted) as caught:
        await gate.call(refused, max_attempts=5)
    assert calls == 1
    assert caught.value.attempts == 1
    assert isinstance(caught.value.last, PermanentRemoteError)
    assert gate.is_open  # the target is fine; the record was wrong


async def test_an_outage_costs_one_probe_per_backoff_not_one_call_per_record() -> None:
    # Backoff held at its 0.05 s floor (doubling is test_pause_honours_retry_after_...'s).
    gate = OutageGate("sink test", backoff_s=0.05, backoff_max_s=0.05)
    target = Target(down_for=13)  # 10 first tries fail, then 3 probes fail, the 4th succeeds
    results = await asyncio.gather(*(gate.call(target, max_attempts=2) for _ in range(10)))
    assert [status for status, _ in results] == [200] * 10
    # 10 first tries + 3 failed probes + 1 good probe + the 9 others once it reopened.
    assert target.calls == 23
    assert gate.pauses == 1
    assert gate.is_open
    assert gate.consecutive_failures == 0
    # No record was dead-lettered for the outage, however many attempts it took.
    assert max(attempts for _, attempts in results) >= 3


async def test_while_closed_callers_wait_without_calling() -> None:
    gate = _gate(backoff_s=0.1)
    target = Target(down_for=1)
    failed = asyncio.Event()
    calls_while_closed = 0

    async def call() -> int:
        nonlocal calls_while_closed
        calls_while_closed += not gate.is_open
        try:
            return await target()
        except RetriableRemoteError:
            failed.set()  # the gate closes as this propagates, before the test resumes
            raise

    first = asyncio.create_task(gate.call(call, max_attempts=1))
    await failed.wait()
    assert not gate.is_open  # closed until its backoff ends
    later = asyncio.create_task(gate.call(call, max_attempts=1))
    assert (await first)[0] == 200
    assert (await later) == (200, 1)
    assert target.calls == 3
    # While closed only the probe called; the newcomer waited for it, then called once.
    assert calls_while_closed == 1


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


async def test_retry_after_sets_the_probe_time() -> None:
    gate = _gate()
    target = Target(down_for=1, retry_after_s=0.15)  # the backoff alone would be 0.05 s
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await gate.call(target, max_attempts=1) == (200, 2)
    assert loop.time() - started >= 0.149


async def test_a_record_failing_while_others_succeed_is_its_own_problem() -> None:
    gate = _gate()
    stop = asyncio.Event()

    async def healthy() -> int:
        await asyncio.sleep(0.001)
        return 200

    async def traffic() -> None:
        while not stop.is_set():
            await gate.call(healthy, max_attempts=1)

    bad_calls = 0

    async def poisoned() -> int:
        nonlocal bad_calls
        bad_calls += 1
        await asyncio.sleep(0.01)  # others succeed meanwhile
        raise RetriableRemoteError("500 for this record", stage="sink", status=500)

    background = asyncio.create_task(traffic())
    try:
        with pytest.raises(RetriesExhausted) as caught:
            await asyncio.wait_for(gate.call(poisoned, max_attempts=3), 10)
    finally:
        stop.set()
        await background
    assert bad_calls == 3
    assert caught.value.attempts == 3
    assert gate.pauses == 0  # never taken for an outage
