"""OrderedRunner: per-key order, bounded concurrency, backpressure, acks in offset order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from agents.stages.runner import Groups, OrderedRunner


@dataclass(frozen=True)
class Message:
    tp: str
    offset: int


@dataclass
class Event:
    key: bytes
    message: Message
    acks: list[tuple[str, int]] = field(repr=False, default_factory=list)

    def ack(self) -> bool:
        self.acks.append((self.message.tp, self.message.offset))
        return True


class Source:
    """An async iterable of events that records how many were pulled."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[Event]:
        for event in self.events:
            self.pulled += 1
            yield event
        await asyncio.Event().wait()  # a live stream never ends on its own


def make_events(specs: list[tuple[str, str]], acks: list[tuple[str, int]]) -> list[Event]:
    """specs: (partition, key) in arrival order; offsets count per partition."""
    offsets: dict[str, int] = {}
    events = []
    for tp, key in specs:
        offset = offsets.get(tp, 0)
        offsets[tp] = offset + 1
        events.append(Event(key.encode(), Message(tp, offset), acks))
    return events


async def until(condition: Callable[[], bool]) -> None:
    """Yield until ``condition()`` holds; bounded, so a bug fails instead of hanging."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


async def run_until(runner: OrderedRunner[Event], source: Source, condition: asyncio.Event) -> None:
    task = asyncio.create_task(runner.run(source))
    try:
        await asyncio.wait_for(condition.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_same_key_runs_in_arrival_order_even_when_the_first_is_slow() -> None:
    acks: list[tuple[str, int]] = []
    events = make_events([("p0", "a"), ("p0", "a"), ("p0", "b")], acks)
    finished: list[int] = []
    done = asyncio.Event()
    b_finished = asyncio.Event()

    async def handle(event: Event) -> None:
        if event.message.offset == 0:
            await b_finished.wait()  # the first a is still running when b ends
        finished.append(event.message.offset)
        if event.message.offset == 2:
            b_finished.set()
        if len(finished) == 3:
            done.set()

    await run_until(OrderedRunner(handle, max_in_flight=8), Source(events), done)
    # b (offset 2) overtakes the slow a, but the second a waits for the first.
    assert finished == [2, 0, 1]


async def test_different_keys_run_concurrently_up_to_the_bound() -> None:
    acks: list[tuple[str, int]] = []
    events = make_events([("p0", f"k{i}") for i in range(10)], acks)
    started: list[int] = []
    release = asyncio.Event()
    three_started = asyncio.Event()
    running = most_running = 0

    async def handle(event: Event) -> None:
        nonlocal running, most_running
        started.append(event.message.offset)
        running += 1
        most_running = max(most_running, running)
        if len(started) == 3:
            three_started.set()
        await release.wait()
        running -= 1

    runner = OrderedRunner(handle, max_in_flight=3)
    source = Source(events)
    task = asyncio.create_task(runner.run(source))
    await asyncio.wait_for(three_started.wait(), 5)
    # The runner pulled the fourth event in the step that admitted the third, then waited for
    # a slot; the handlers started after that step, so all of this is settled by now.
    assert started == [0, 1, 2]
    assert runner.stats.in_flight == 3
    # Backpressure: one more event pulled (waiting for a slot), the rest stay in Kafka.
    assert source.pulled == 4
    release.set()
    await until(lambda: runner.stats.handled == 10)
    assert runner.stats.max_in_flight_seen == 3
    assert most_running == 3  # counted by the handlers themselves, over the whole run
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_acks_follow_offset_order_so_a_slow_head_holds_the_commit() -> None:
    acks: list[tuple[str, int]] = []
    events = make_events([("p0", "a"), ("p0", "b"), ("p0", "c"), ("p1", "d")], acks)
    release_head = asyncio.Event()
    tail_done = asyncio.Event()
    count = 0

    async def handle(event: Event) -> None:
        nonlocal count
        if event.message == Message("p0", 0):
            await release_head.wait()
        count += 1
        if count == 3:
            tail_done.set()

    runner = OrderedRunner(handle, max_in_flight=8)
    task = asyncio.create_task(runner.run(Source(events)))
    await asyncio.wait_for(tail_done.wait(), 5)
    # p0:1 and p0:2 are done but not acked: acking them would let Faust commit past p0:0.
    assert acks == [("p1", 0)]
    release_head.set()
    await until(lambda: len(acks) == 4)
    assert acks == [("p1", 0), ("p0", 0), ("p0", 1), ("p0", 2)]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_unfinished_event_is_never_acked_when_the_runner_stops() -> None:
    acks: list[tuple[str, int]] = []
    events = make_events([("p0", "a"), ("p0", "b")], acks)
    second_done = asyncio.Event()

    async def handle(event: Event) -> None:
        if event.message.offset == 0:
            await asyncio.Event().wait()  # never finishes: the worker dies first
        second_done.set()

    await run_until(OrderedRunner(handle, max_in_flight=4), Source(events), second_done)
    assert acks == []


async def test_a_crashing_handler_is_retried_not_acked() -> None:
    acks: list[tuple[str, int]] = []
    events = make_events([("p0", "a")], acks)
    calls = 0
    done = asyncio.Event()

    async def handle(event: Event) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("dead-letter write failed")
        done.set()

    runner = OrderedRunner(handle, max_in_flight=1, crash_retry_s=0)
    await run_until(runner, Source(events), done)
    await asyncio.sleep(0)
    assert calls == 3
    assert runner.stats.handler_crashes == 2
    assert acks == [("p0", 0)]


def test_bound_must_be_positive() -> None:
    async def handle(event: Event) -> None:
        return None

    with pytest.raises(ValueError, match="at least 1"):
        OrderedRunner(handle, max_in_flight=0)


async def test_a_stuck_group_holds_only_its_share_and_the_others_run_on() -> None:
    """A paused AI flow (group "paused") may hold 2 of the runner's 6 slots; the other flow's
    events keep being pulled and handled past it, until the next record read is one more of
    the paused flow's: there the runner stops (it cannot skip it)."""
    acks: list[tuple[str, int]] = []
    # keys name the group; "p" events never finish while the test runs.
    specs = [("p0", "p1"), ("p0", "o1"), ("p0", "p2"), ("p0", "o2"), ("p0", "o3"), ("p0", "o4")]
    specs += [("p0", "o5"), ("p0", "p3"), ("p0", "o6")]
    events = make_events(specs, acks)
    release = asyncio.Event()
    handled: list[bytes] = []

    async def handle(event: Event) -> None:
        if event.key.startswith(b"p"):
            await release.wait()
        handled.append(event.key)

    groups: Groups[Event] = Groups(
        group_of=lambda e: "paused" if e.key.startswith(b"p") else "other",
        limits={"paused": 2, "other": 4},
    )
    runner = OrderedRunner(handle, max_in_flight=6, groups=groups)
    source = Source(events)
    task = asyncio.create_task(runner.run(source))
    try:
        await until(lambda: len(handled) == 5)
        assert handled == [b"o1", b"o2", b"o3", b"o4", b"o5"]
        await until(lambda: source.pulled == 8)  # p3 pulled, waiting for the paused share
        assert runner.stats.in_flight_by_group == {"paused": 2, "other": 0}
        assert acks == []  # p1 heads the partition: nothing committed past it
        release.set()
        await until(lambda: len(handled) == 9)
        assert runner.stats.in_flight_by_group == {"paused": 0, "other": 0}
        assert acks == [("p0", i) for i in range(9)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
