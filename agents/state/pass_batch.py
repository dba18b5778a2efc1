"""Entries written several to a record: those added while the event loop runs one pass.

A memory that writes one small entry per event (the worker's "done" marks and answer-cache
entries, the sinks' "delivered" entries) pays a producer write and a broker record per entry,
and every reader of its topic reads each back. :class:`PassBatcher` gathers the entries added
while the event loop runs one pass (those of every event finishing in that pass) into one
record, written on the loop's next pass; each :meth:`PassBatcher.add` returns once the record
holding its entry is acknowledged, as it would for a record of its own. The record's key is
``<prefix><random id>``, its own, so compaction never merges two of them; the topic's retention
drops it. What a record looks like is the memory's own (``encode``): see
:mod:`agents.state.durable_map` and :mod:`agents.state.delivered`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Generic, TypeVar

from agents.emit import emit
from streams.kafka.producer import KafkaWriter

T = TypeVar("T")

# Entries of one record at most, by count and by the sizes their adds give: well under a
# produce request's 1 MiB (streams.kafka.producer.MAX_REQUEST_BYTES) and a batch's 256 KiB.
MAX_ENTRIES_PER_RECORD = 1000
MAX_RECORD_BYTES = 128 * 1024


class _Gathered(Generic[T]):
    """The entries gathered for one record, their size, and the future their adds wait on."""

    __slots__ = ("done", "entries", "size_bytes")

    def __init__(self) -> None:
        self.entries: list[T] = []
        self.size_bytes = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class PassBatcher(Generic[T]):
    """Writes the entries added in one loop pass to ``topic`` as one record,
    ``encode(entries)``."""

    def __init__(self, topic: str, prefix: str, encode: Callable[[list[T]], bytes]) -> None:
        self.topic = topic
        self.prefix = prefix
        self.encode = encode
        self._gathering: dict[KafkaWriter, _Gathered[T]] = {}
        self._writing: set[asyncio.Task[None]] = set()
        self.records_written = 0

    def join(self, writer: KafkaWriter, entry: T, size_bytes: int = 0) -> asyncio.Future[None]:
        """Add ``entry`` (``size_bytes`` of the record) to the record gathered in this pass,
        or to a new one when that one is full; the future is done once that record is
        acknowledged (acks=all, :func:`emit`), or raises what its write raised. Await it
        shielded (:meth:`add`): cancelling one waiter leaves the record to the others."""
        gathered = self._gathering.get(writer)
        if (
            gathered is None
            or len(gathered.entries) >= MAX_ENTRIES_PER_RECORD
            or gathered.size_bytes + size_bytes > MAX_RECORD_BYTES
        ):
            gathered = self._gathering[writer] = _Gathered()
            asyncio.get_running_loop().call_soon(self._write_soon, writer, gathered)
        gathered.entries.append(entry)
        gathered.size_bytes += size_bytes
        return gathered.done

    async def add(self, writer: KafkaWriter, entry: T, size_bytes: int = 0) -> None:
        """:meth:`join`, then wait for the record holding ``entry``."""
        await asyncio.shield(self.join(writer, entry, size_bytes))

    def _write_soon(self, writer: KafkaWriter, gathered: _Gathered[T]) -> None:
        if self._gathering.get(writer) is gathered:
            del self._gathering[writer]
        task = asyncio.create_task(self._write(writer, gathered))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, writer: KafkaWriter, gathered: _Gathered[T]) -> None:
        key = f"{self.prefix}{os.urandom(16).hex()}".encode()  # uuid4: 4x the CPU
        try:
            await emit(writer, self.topic, self.encode(gathered.entries), key=key)
        except asyncio.CancelledError:  # at a stop: the adds waiting on it end too
            gathered.done.cancel()
            raise
        except Exception as exc:  # e.g. RecordTooLarge: each add waiting on it raises it
            gathered.done.set_exception(exc)
            gathered.done.exception()  # retrieved, even if every add waiting was cancelled
            raise
        self.records_written += 1
        gathered.done.set_result(None)

    async def stop(self) -> None:
        """Cancel the records being written (their adds raise CancelledError)."""
        for task in list(self._writing):
            task.cancel()
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
