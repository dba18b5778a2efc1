"""Windows of a topic: parsing --from/--to, fixing per-partition bounds, reading [start, end)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndTimestamp

from schemas.errors import ToolError
from streams.kafka.reader import Window, parse_position, parse_time, read_window, window

T = "hookstream.events"
P0, P1, P2 = TopicPartition(T, 0), TopicPartition(T, 1), TopicPartition(T, 2)


def test_an_integer_is_an_offset() -> None:
    assert parse_position("1200", option="--from") == 1200
    assert parse_position(" 0 ", option="--from") == 0


def test_iso_times_are_utc_unless_they_say_otherwise() -> None:
    assert parse_position("2026-03-01T10:00:00Z", option="--from") == datetime(
        2026, 3, 1, 10, tzinfo=UTC
    )
    assert parse_position("2026-03-01T10:00:00", option="--from") == datetime(
        2026, 3, 1, 10, tzinfo=UTC
    )
    plus_two = parse_position("2026-03-01T12:00:00.250+02:00", option="--to")
    assert plus_two == datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=2)))
    assert isinstance(plus_two, datetime)
    assert plus_two.timestamp() == datetime(2026, 3, 1, 10, 0, 0, 250_000, tzinfo=UTC).timestamp()
    assert parse_position("2026-03-01", option="--from") == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize("text", ["-5", "yesterday", "12.5", "", "2026-13-01T00:00:00Z"])
def test_anything_else_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(ToolError, match=r"^--from .*offset .*ISO 8601"):
        parse_position(text, option="--from")


def test_parse_time_wants_a_time() -> None:
    assert parse_time("2026-03-01T10:00:00Z", option="--since").year == 2026
    with pytest.raises(ToolError, match="--since '12': give an ISO 8601 time"):
        parse_time("12", option="--since")


def test_window_size_ignores_empty_ranges() -> None:
    assert Window({P0: (3, 8), P1: (5, 5), P2: (0, 1)}).size == 6


class FakeConsumer:
    """Three partitions: p0 holds offsets 0..9, p1 2..4 (older ones deleted), p2 is empty.
    Record n's timestamp is 1000 * (n + 1) ms in every partition."""

    def __init__(self) -> None:
        self.low = {P0: 0, P1: 2, P2: 0}
        self.high = {P0: 10, P1: 5, P2: 0}
        self._client = SimpleNamespace(force_metadata_update=self._noop)
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.built = 0  # record objects handed out

    async def _noop(self) -> None:
        return None

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0, 1, 2} if topic == T else None

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.low[tp] for tp in tps}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.high[tp] for tp in tps}

    async def offsets_for_times(
        self, times: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        found: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        for tp, millis in times.items():
            offsets = [o for o in range(self.low[tp], self.high[tp]) if 1000 * (o + 1) >= millis]
            found[tp] = OffsetAndTimestamp(offsets[0], 1000 * (offsets[0] + 1)) if offsets else None
        return found

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Any]]:
        batches = {}
        for tp in tps:
            if tp in self.paused:
                continue
            start = self.positions[tp]
            stop = min(self.high[tp], start + 3, start + max_records)  # small fetches
            self.built += max(0, stop - start)
            if stop > start:
                batches[tp] = [
                    SimpleNamespace(partition=tp.partition, offset=o) for o in range(start, stop)
                ]
                self.positions[tp] = stop
        return batches


def _fake() -> AIOKafkaConsumer:
    return cast(AIOKafkaConsumer, FakeConsumer())


def _ms(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


async def test_no_bounds_is_the_whole_topic_as_it_is_now() -> None:
    win = await window(_fake(), T)
    assert win.ranges == {P0: (0, 10), P1: (2, 5), P2: (0, 0)}


async def test_offsets_are_clamped_into_each_partition() -> None:
    win = await window(_fake(), T, 3, 7)
    # p1 starts at 3 (within 2..5) and ends at its end; p2 has nothing.
    assert win.ranges == {P0: (3, 7), P1: (3, 5), P2: (0, 0)}
    win = await window(_fake(), T, 6, None)
    # A start past a short partition's end selects nothing there (not its beginning).
    assert win.ranges == {P0: (6, 10), P1: (5, 5), P2: (0, 0)}
    win = await window(_fake(), T, 0, 1)
    assert win.ranges == {P0: (0, 1), P1: (2, 2), P2: (0, 0)}


async def test_times_become_the_first_offset_at_or_after_them() -> None:
    # [4.0 s, 8.5 s): records whose timestamps are 4000..8000 ms, i.e. offsets 3..7.
    win = await window(_fake(), T, _ms(4000), _ms(8500))
    assert win.ranges == {P0: (3, 8), P1: (3, 5), P2: (0, 0)}
    # A start after every record: nothing; an end after every record: the end offset.
    win = await window(_fake(), T, _ms(60_000), None)
    assert win.size == 0
    win = await window(_fake(), T, _ms(0), _ms(60_000))
    assert win.ranges == {P0: (0, 10), P1: (2, 5), P2: (0, 0)}


async def test_an_end_before_the_start_is_empty() -> None:
    win = await window(_fake(), T, 8, 2)
    assert win.size == 0


async def test_an_unknown_topic_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match="'nope' does not exist"):
        await window(_fake(), "nope")


async def test_read_window_yields_exactly_the_range() -> None:
    consumer = FakeConsumer()
    win = Window({P0: (2, 9), P1: (3, 5), P2: (0, 0)})
    seen = [
        (r.partition, r.offset)
        async for batch in read_window(cast(AIOKafkaConsumer, consumer), win)
        for r in batch
    ]
    assert sorted(seen) == [(0, o) for o in range(2, 9)] + [(1, 3), (1, 4)]
    assert [o for p, o in seen if p == 0] == list(range(2, 9))  # in offset order
    assert P2 not in consumer.assigned  # empty ranges are not even read


async def test_read_window_of_nothing_reads_nothing() -> None:
    consumer = FakeConsumer()
    assert [
        b async for b in read_window(cast(AIOKafkaConsumer, consumer), Window({P0: (4, 4)}))
    ] == []
    assert consumer.assigned == []
