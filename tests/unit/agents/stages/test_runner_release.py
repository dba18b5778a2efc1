"""OrderedRunner.release: at a rebalance or a stop, events that only wait are let go unacked.

Faust waits for every event it handed out to be acked before a rebalance or a stop goes on
(``stream_wait_empty``). A paused flow's events could keep that wait going for an outage's
length; ``release`` cancels the ones that are only waiting and marks their messages acked *for
that wait only*, without acking them, so the commit stays before them and they are read again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from agents.stages.runner import OrderedRunner
from tests.unit.agents.stages.test_runner import until


@dataclass
class Message:
    tp: str
    offset: int
    acked: bool = False  # what Faust's wait reads


@dataclass
class Event:
    key: bytes
    message: Message
    acks: list[int] = field(repr=False, default_factory=list)

    def ack(self) -> bool:  # what commits: the runner's in-order ack
        self.acks.append(self.message.offset)
        return True


class Source:
    def __init__(self, events: list[Event]) -> None:
        self.events = events

    async def __aiter__(self) -> AsyncIterator[Event]:
        for event in self.events:
            yield event
        await asyncio.Event().wait()


async def test_waiting_events_are_released_unacked_and_busy_ones_finish() -> None:
    acks: list[int] = []
    # Offsets 0..4 on one partition: 0 is in a call (busy), 1 waits for the provider,
    # 2 waits behind 1 (same key), 3 is done quickly, 4 is in a call too.
    keys = [b"a", b"b", b"b", b"c", b"d"]
    events = [Event(k, Message("p0", i), acks) for i, k in enumerate(keys)]
    in_call: dict[int, asyncio.Event] = {0: asyncio.Event(), 4: asyncio.Event()}
    busy: set[asyncio.Task[None]] = set()
    started: set[int] = set()
    cancelled: list[int] = []

    async def handle(event: Event) -> None:
        offset = event.message.offset
        started.add(offset)
        try:
            if offset in in_call:
                current = asyncio.current_task()
                assert current is not None
                busy.add(current)
                await in_call[offset].wait()
                busy.discard(current)
            elif offset != 3:
                await asyncio.Event().wait()  # a paused flow: waits for ever
        except asyncio.CancelledError:
            cancelled.append(offset)
            raise

    runner: OrderedRunner[Event] = OrderedRunner(handle, max_in_flight=8)
    task = asyncio.create_task(runner.run(Source(events)))
    await until(lambda: {0, 1, 3, 4} <= started)

    assert runner.release(lambda t: t in busy) == 2  # 1 (waiting) and 2 (behind it)
    await until(lambda: cancelled == [1])  # 2 was cancelled before its handler began
    # Released: 1 and 2; 3 is done but after 1, so it will not be acked either; 0 and 4 are
    # in their calls and Faust waits for them.
    assert [e.message.acked for e in events] == [False, True, True, True, False]
    assert acks == []

    in_call[0].set()
    in_call[4].set()
    await until(lambda: events[4].message.acked)  # 4 finished: Faust's wait may end now
    await until(lambda: acks == [0])
    # Nothing after the first released offset is acked, done or not: Faust would commit past
    # a one-offset gap at the head of its acked offsets (2 would then be skipped for good).
    # The next owner reads 1 to 4 again from the commit, and skips 3 and 4 by their markers.
    assert acks == [0]
    assert cancelled == [1]
    assert 2 not in started  # never handled here: its predecessor's release took it along
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_event_read_but_waiting_for_a_slot_is_released_and_not_admitted() -> None:
    acks: list[int] = []
    events = [Event(f"k{i}".encode(), Message("p0", i), acks) for i in range(3)]
    handled: list[int] = []

    async def handle(event: Event) -> None:
        handled.append(event.message.offset)
        await asyncio.Event().wait()

    runner: OrderedRunner[Event] = OrderedRunner(handle, max_in_flight=2)
    task = asyncio.create_task(runner.run(Source(events)))
    await until(lambda: handled == [0, 1])  # the third is read, waiting for a slot
    assert runner.release(lambda t: False) == 3
    assert all(e.message.acked for e in events)
    await asyncio.sleep(0.01)
    assert handled == [0, 1]  # the slots freed by the release did not go to the held event
    assert acks == []
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_faust_commits_past_a_one_offset_gap_which_is_why_nothing_after_a_release_is_acked() -> (
    None
):
    """faust-streaming's ``Consumer._new_offset``, called on plain state: with offset 5 the
    next to read (committed) and only 6 acked, it commits 7, skipping 5; a wider gap it
    refuses. This is why ``release`` acks nothing after the first released event."""
    from collections import defaultdict
    from types import SimpleNamespace

    from faust.transport.consumer import Consumer
    from faust.types import TP
    from intervaltree import IntervalTree  # type: ignore[import-untyped]

    tp = TP("t", 0)
    state = SimpleNamespace(
        _acked=defaultdict(list, {tp: [6]}),
        _acked_index=defaultdict(set, {tp: {6}}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, {tp: 5}),
    )
    assert Consumer._new_offset(state, tp) == 7  # type: ignore[arg-type]  # 5 skipped
    state._acked[tp], state._acked_index[tp] = [7], {7}
    assert Consumer._new_offset(state, tp) is None  # type: ignore[arg-type]


async def test_a_busy_event_that_waits_again_is_released_by_the_next_release() -> None:
    """The outage gate's probe: busy (in its call) at the first release, then waiting again
    (its call failed). A one-shot release never let it go, and Faust waited for it for ever;
    the next release does, whether it heads its partition (0) or comes after a released one
    (2, cut off from its partition's queue by the first release)."""
    acks: list[int] = []
    events = [Event(k, Message("p0", i), acks) for i, k in enumerate([b"a", b"b", b"c"])]
    busy: set[asyncio.Task[None]] = set()
    call_over = asyncio.Event()
    cancelled: list[int] = []

    async def handle(event: Event) -> None:
        offset = event.message.offset
        current = asyncio.current_task()
        assert current is not None
        try:
            if offset != 1:  # 0 and 2 are in a call...
                busy.add(current)
                await call_over.wait()
                busy.discard(current)  # ...which fails: they wait again
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(offset)
            raise

    runner: OrderedRunner[Event] = OrderedRunner(handle, max_in_flight=8)
    task = asyncio.create_task(runner.run(Source(events)))
    await until(lambda: len(busy) == 2)
    assert runner.release(lambda t: t in busy) == 1  # 1 only: 0 and 2 are busy
    await until(lambda: cancelled == [1])
    assert [e.message.acked for e in events] == [False, True, False]
    assert runner.release(lambda t: t in busy) == 0  # still busy: nothing changes
    call_over.set()
    await until(lambda: not busy)
    assert runner.release(lambda t: t in busy) == 2
    await until(lambda: sorted(cancelled) == [0, 1, 2])
    assert all(e.message.acked for e in events)  # Faust's wait can end
    assert acks == []  # and nothing was committed: all three are read again
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_events_read_while_releasing_are_let_go_until_resume() -> None:
    """Between a rebalance's release and Faust pausing the stream, the runner may read more
    events: handled, one could finish and be acked behind a released one (and Faust would
    commit past that). They are let go unhandled until ``resume``; after it, events are
    handled and acked as usual."""
    acks: list[int] = []
    handled: list[int] = []
    feed: asyncio.Queue[Event] = asyncio.Queue()

    class Feed:
        async def __aiter__(self) -> AsyncIterator[Event]:
            while True:
                yield await feed.get()

    async def handle(event: Event) -> None:
        handled.append(event.message.offset)

    runner: OrderedRunner[Event] = OrderedRunner(handle, max_in_flight=4)
    task = asyncio.create_task(runner.run(Feed()))
    assert runner.release(lambda t: False) == 0
    late = Event(b"a", Message("p0", 7), acks)
    await feed.put(late)
    await until(lambda: late.message.acked)
    assert handled == []
    assert acks == []
    runner.resume()
    await feed.put(Event(b"a", Message("p0", 7), acks))  # read again after the rebalance
    await until(lambda: acks == [7])
    assert handled == [7]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_event_behind_its_keys_predecessor_is_never_busy() -> None:
    """The sinks call every task busy that is not held at their gate; one still waiting for
    its key's predecessor has not begun, so it is released with that predecessor rather than
    let run after it was released (it would overtake it)."""
    acks: list[int] = []
    events = [Event(b"k", Message("p0", i), acks) for i in range(2)]
    started: list[int] = []
    at_gate: set[asyncio.Task[None]] = set()

    async def handle(event: Event) -> None:
        started.append(event.message.offset)
        current = asyncio.current_task()
        assert current is not None
        at_gate.add(current)
        await asyncio.Event().wait()  # held at a closed gate

    runner: OrderedRunner[Event] = OrderedRunner(handle, max_in_flight=4)
    task = asyncio.create_task(runner.run(Source(events)))
    await until(lambda: started == [0] and runner.stats.in_flight == 2)
    # The sinks' rule: busy unless held at the gate; 1 waits for 0, not at the gate.
    assert runner.release(lambda t: t not in at_gate) == 2
    assert all(e.message.acked for e in events)
    await until(lambda: runner.stats.in_flight == 0)  # both tasks ended
    assert started == [0]  # 1 never ran
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
