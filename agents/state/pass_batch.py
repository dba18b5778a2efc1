"""Entries written several to a record: those added while the event loop runs one pass, or
while the previous record waits for its acknowledgement.

A memory that writes one small entry per event (the worker's "done" marks and answer-cache
entries, the sinks' "delivered" entries) pays a producer write and a broker record per entry,
and every reader of its topic reads each back. :class:`PassBatcher` gathers the entries added
while the event loop runs one pass (those of every event finishing in that pass) into one
record, written on the loop's next pass; each :meth:`PassBatcher.add` returns once the record
holding its entry is acknowledged, as it would for a record of its own.

While one of its records is being written, the entries added meanwhile are gathered into the
next, written as soon as the first is acknowledged (at once when it is full): a group commit,
without a linger. A busy worker's events finish one to three per pass; gathered over a round
trip instead, the worker wrote 0.41 memory records per event instead of 0.84, for 0.98-0.99x
the CPU per event (bench/pipeline, issue 16).

The record's key is ``<prefix><random id>``, its own, so compaction never merges two of them;
the topic's retention drops it. What a record looks like is the memory's own (``encode``): see
:mod:`agents.state.durable_map` and :mod:`agents.state.delivered`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Generic, TypeVar

from agents.emit import emit
from schemas.errors import RecordTooLarge
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
        # Records of each writer being written; while there are any, a new gathering waits.
        self._in_flight: dict[KafkaWriter, int] = {}
        self._writing: dict[asyncio.Task[None], _Gathered[T]] = {}
        self._stopping = False
        self.records_written = 0

    def join(self, writer: KafkaWriter, entry: T, size_bytes: int = 0) -> asyncio.Future[None]:
        """Add ``entry`` (``size_bytes`` of the record) to the record gathered in this pass,
        or to a new one when that one is full; the future is done once that record is
        acknowledged (acks=all, :func:`emit`), or raises what its write raised. Await it
        shielded (:meth:`add`): cancelling one waiter leaves the record to the others."""
        gathered = self._gathering.get(writer)
        if gathered is not None and (
            len(gathered.entries) >= MAX_ENTRIES_PER_RECORD
            or gathered.size_bytes + size_bytes > MAX_RECORD_BYTES
        ):
            self._start(writer)  # full: written now, beside the one in flight
            gathered = None
        if gathered is None:
            gathered = self._gathering[writer] = _Gathered()
            if not self._in_flight.get(writer):
                asyncio.get_running_loop().call_soon(self._write_soon, writer, gathered)
            # else: written once the record in flight is acknowledged (_write's finally)
        gathered.entries.append(entry)
        gathered.size_bytes += size_bytes
        return gathered.done

    async def add(self, writer: KafkaWriter, entry: T, size_bytes: int = 0) -> None:
        """:meth:`join`, then wait for the record holding ``entry``."""
        await asyncio.shield(self.join(writer, entry, size_bytes))

    def _write_soon(self, writer: KafkaWriter, gathered: _Gathered[T]) -> None:
        """The loop's next pass after the first entry: written unless already on its way."""
        if self._gathering.get(writer) is gathered:
            self._start(writer)

    def _start(self, writer: KafkaWriter) -> None:
        """Write the record ``writer``'s entries are gathering in: it gathers no more."""
        gathered = self._gathering.pop(writer)
        self._in_flight[writer] = self._in_flight.get(writer, 0) + 1
        task = asyncio.create_task(self._write(writer, gathered))
        self._writing[task] = gathered
        task.add_done_callback(self._writing.pop)

    async def _write(self, writer: KafkaWriter, gathered: _Gathered[T]) -> None:
        try:
            await self._write_entries(writer, gathered.entries)
        except asyncio.CancelledError:  # at a stop: the adds waiting on it end too
            gathered.done.cancel()
            raise
        except Exception as exc:  # e.g. RecordTooLarge: each add waiting on it raises it
            gathered.done.set_exception(exc)
            gathered.done.exception()  # retrieved, even if every add waiting was cancelled
            raise
        finally:
            self._in_flight[writer] -= 1
            if writer in self._gathering and not self._in_flight[writer] and not self._stopping:
                self._start(writer)  # the entries gathered while this one was in flight
        gathered.done.set_result(None)

    async def _write_entries(self, writer: KafkaWriter, entries: list[T]) -> None:
        """``entries`` as one record; if its topic refuses it as too large (a topic whose
        ``max.message.bytes`` is under :data:`MAX_RECORD_BYTES`), as two records of half the
        entries each, in order, and so on: only an entry too large on its own raises."""
        key = f"{self.prefix}{os.urandom(16).hex()}".encode()  # uuid4: 4x the CPU
        try:
            await emit(writer, self.topic, self.encode(entries), key=key)
        except RecordTooLarge:
            if len(entries) == 1:
                raise
            half = len(entries) // 2
            await self._write_entries(writer, entries[:half])
            await self._write_entries(writer, entries[half:])
            return
        self.records_written += 1

    async def stop(self) -> None:
        """Cancel the records being written and those gathered (their adds raise
        CancelledError)."""
        self._stopping = True
        # A task cancelled before its first step never runs _write's own cancel: each
        # gathering's future is cancelled here, whether its write started or not.
        unwritten = [*self._gathering.values(), *self._writing.values()]
        self._gathering.clear()
        tasks = list(self._writing)
        for task in tasks:
            task.cancel()
        for gathered in unwritten:
            gathered.done.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Ready for a start again (a memory's owner may restart it): a task cancelled before
        # its first step never counted itself out.
        self._in_flight.clear()
        self._stopping = False
