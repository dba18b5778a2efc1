"""Keys written several to a record: those added while the event loop runs one pass.

A memory that writes one small entry per event (the sinks' "delivered" entries) pays a
producer write and a broker record per entry, and every reader of its topic reads each back.
:class:`PassBatcher` gathers the keys added while the event loop runs one pass (the entries of
every event finishing in that pass) into one record, written on the loop's next pass; each
:meth:`PassBatcher.add` returns once the record holding its key is acknowledged, as it would
for a record of its own. The record's key is ``<prefix><random id>``, its own, so compaction
never merges two of them; the topic's retention drops it.

:class:`agents.state.durable_map.DurableMap`'s batched "done" marks (``_MarkBatch``) are the
same mechanism with another record shape (``encode``): one candidate for sharing this.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from agents.emit import emit
from streams.kafka.producer import KafkaWriter

# The keys of one record at most (an idempotency key is ~60-120 bytes: ~120 KB at most).
MAX_KEYS_PER_RECORD = 1000


class _Gathered:
    """The keys gathered for one record, and the future their adds wait on."""

    __slots__ = ("done", "keys")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class PassBatcher:
    """Writes the keys added in one loop pass to ``topic`` as one record, ``encode(keys)``."""

    def __init__(self, topic: str, prefix: str, encode: Callable[[list[str]], bytes]) -> None:
        self.topic = topic
        self.prefix = prefix
        self.encode = encode
        self._gathering: dict[KafkaWriter, _Gathered] = {}
        self._writing: set[asyncio.Task[None]] = set()
        self.records_written = 0

    def join(self, writer: KafkaWriter, key: str) -> asyncio.Future[None]:
        """Add ``key`` to the record gathered in this pass; the future is done once that
        record is acknowledged (acks=all, :func:`emit`), or raises what its write raised.
        Await it shielded (:meth:`add`): cancelling one waiter leaves the record to the
        others."""
        gathered = self._gathering.get(writer)
        if gathered is None or len(gathered.keys) >= MAX_KEYS_PER_RECORD:
            gathered = self._gathering[writer] = _Gathered()
            asyncio.get_running_loop().call_soon(self._write_soon, writer, gathered)
        gathered.keys.append(key)
        return gathered.done

    async def add(self, writer: KafkaWriter, key: str) -> None:
        """:meth:`join`, then wait for the record holding ``key``."""
        await asyncio.shield(self.join(writer, key))

    def _write_soon(self, writer: KafkaWriter, gathered: _Gathered) -> None:
        if self._gathering.get(writer) is gathered:
            del self._gathering[writer]
        task = asyncio.create_task(self._write(writer, gathered))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, writer: KafkaWriter, gathered: _Gathered) -> None:
        key = f"{self.prefix}{uuid.uuid4().hex}".encode()
        try:
            await emit(writer, self.topic, self.encode(gathered.keys), key=key)
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
