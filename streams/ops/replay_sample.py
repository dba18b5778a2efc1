"""The estimate's sample taken from the copy's own reads (``replay --yes``, issue 16).

:meth:`streams.ops.replay.Replayer.estimate` reads its sample as slices of each partition
(:func:`streams.ops.replay.sample_windows`). A replay that asks nobody copies the whole window
anyway, and those slices are part of it: with 512 KiB producer batches each slice needed one or
two whole batches of every partition, so reading the sample on its own fetched about every
batch of a 100,000-event window a second time (bench/replay). Here the copy's records are
looked at as they pass, and those inside the slices are kept for the estimate: the same records
as reading each slice on its own, a record in two overlapping slices twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TypeVar

from streams.kafka.reader import RawRecord, Window

Record = TypeVar("Record", bound=RawRecord)


def slices_by_partition(parts: Iterable[Window]) -> dict[int, deque[tuple[int, int]]]:
    """Per partition, the ``[first, end)`` offsets of the sample's slices (``parts``, the
    windows an estimate reads one after the other), in offset order."""
    slices: dict[int, deque[tuple[int, int]]] = {}
    for part in parts:
        for tp, (first, end) in part.ranges.items():
            if end > first:
                slices.setdefault(tp.partition, deque()).append((first, end))
    return slices


def reaches(records: Iterable[RawRecord], slices: deque[tuple[int, int]]) -> bool:
    """Can ``records`` hold an offset of ``slices``? False only for a whole fetched batch
    that ends before the next slice: its records are then copied without being looked at."""
    following = getattr(records, "next_offset", None)
    return following is None or following > slices[0][0]


def picking(
    records: Iterable[Record], slices: deque[tuple[int, int]], picked: list[Record]
) -> Iterator[Record]:
    """Yield every record, and append to ``picked`` those inside ``slices`` (a record in k
    slices k times). Slices passed are dropped from the front: their starts and ends ascend
    (:func:`~streams.ops.replay.sample_windows` gives every slice of a partition one length)."""
    for record in records:
        offset = record.offset
        while slices and offset >= slices[0][1]:
            slices.popleft()
        if slices and offset >= slices[0][0]:
            for first, _ in slices:
                if first > offset:
                    break
                picked.append(record)
        yield record
