"""The estimate's sample taken from the copy's reads: the same records as each slice read
on its own (streams.ops.replay_sample)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition

from streams.kafka.reader import Window
from streams.ops.replay import sample_windows
from streams.ops.replay_sample import picking, reaches, slices_by_partition


@dataclass(frozen=True)
class _Record:
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class _Batch(list[_Record]):
    """A fetched batch: its records and the offset after its last."""

    @property
    def next_offset(self) -> int:
        return self[-1].offset + 1


def _one_by_one(parts: list[Window]) -> Counter[tuple[int, int]]:
    """(partition, offset) of each record, reading each slice on its own (the estimate)."""
    return Counter(
        (tp.partition, offset)
        for part in parts
        for tp, (first, end) in part.ranges.items()
        for offset in range(first, end)
    )


@pytest.mark.parametrize(
    ("lengths", "records"),
    [
        ((35, 34, 0), 30),  # slices of 1 record, spread out
        ((35, 34, 1), 95),  # slices longer than their spacing: they overlap
        ((12_500,) * 8, 10_000),  # bench/replay's window
        ((5, 3), 7),  # shorter partitions than slices: the same record in several slices
    ],
)
def test_picking_takes_what_reading_each_slice_takes(
    lengths: tuple[int, ...], records: int
) -> None:
    win = Window({TopicPartition("t", p): (7, 7 + n) for p, n in enumerate(lengths)})
    parts = sample_windows(win, records)
    slices = slices_by_partition(parts)
    picked: Counter[tuple[int, int]] = Counter()
    for partition, length in enumerate(lengths):
        offsets = list(range(7, 7 + length))
        # Fetched in batches of 4 records: some end before the next slice and are skipped.
        for index in range(0, length, 4):
            batch = _Batch(_Record(o) for o in offsets[index : index + 4])
            ahead = slices.get(partition)
            copied: list[_Record] = list(batch)
            if ahead and reaches(batch, ahead):
                taken: list[_Record] = []
                copied = list(picking(batch, ahead, taken))
                picked.update((partition, r.offset) for r in taken)
            assert copied == list(batch)  # the copy still gets every record, in order
    assert picked == _one_by_one(parts)


def test_a_batch_that_ends_before_the_next_slice_is_not_looked_at() -> None:
    slices = slices_by_partition([Window({TopicPartition("t", 0): (10, 12)})])[0]
    assert not reaches(_Batch([_Record(8), _Record(9)]), slices)
    assert reaches(_Batch([_Record(9), _Record(10)]), slices)
    assert reaches(iter([_Record(8)]), slices)  # a partial batch: no end known
