"""A dict that survives restarts and is shared by every worker: a compacted Kafka topic.

Used for the worker's two memories: event ids already processed (dedupe) and model answers
(the AI cache). Why not a Faust table:

- a Faust table is partitioned like its source topic and each worker holds only the
  partitions it is assigned, but an identical prompt can come from any key on any partition,
  so the cache must be readable whole by every worker; Faust's ``GlobalTable`` is the tool for
  that, and it is where Faust's recovery bugs cluster (hangs at start, faust #21, #74);
- Faust derives a table write's changelog partition from the ``current_event`` context
  variable and writes it with ``send_soon`` (buffered, not awaited); with events handled in
  their own tasks by :class:`~agents.stages.runner.OrderedRunner`, we want every write awaited with
  ``acks=all`` before the event is acked, and its partition chosen by its own key.

So each map is one topic with ``cleanup.policy=compact,delete`` (compaction keeps the latest
value per key; ``retention.ms`` = the TTL drops old segments). :meth:`DurableMap.start` reads
the topic to its end before returning, so a worker's agents never run with a half-loaded map
(what Faust's recovery does for tables); a tail task then keeps reading, so entries written by
other workers arrive within moments (both: :class:`streams.kafka.compacted.CompactedReader`).
:meth:`put` writes through: the local copy changes only once Kafka has the record. Entries
older than the TTL are ignored on read and dropped from memory by a periodic cleanup.

Every worker holds the whole map in memory, for one TTL. Compact forms keep that small
(bench/memory, 1,000,000 entries; docs/capacity.md): a dedupe mark (value 1) is held as its
write time alone (one float shared by the marks of a batch record), and any other value as
JSON bytes parsed again at each :meth:`get` (about 1 µs of CPU, on a cache hit only) instead
of as Python objects, which take several times their JSON's size: a batch record's value as
one bytes object, its write time and its JSON; a record of its own as (write time, the
record's bytes as read from Kafka). What :meth:`put` writes is held as given until the tail
reads it back, moments later, and replaces it.

What :func:`put_all` writes goes several entries to a record (:mod:`agents.state.pass_batch`,
issue 16): the
entries put while the event loop runs one pass go to Kafka as one record per map,
``marks/<random id>`` → ``{"written_at": …, "marks": [key, …], "values": {key: value, …}}``
(marks: the "done" marks, value 1; values: anything else, e.g. answer-cache entries), and each
:func:`put_all` returns once the record holding its entries is acknowledged, as it did for a
record of its own. A record per entry was two of the worker's four records per event, each read
back by every worker's tail; in the pipeline benchmark (256 events in flight, a loaded machine)
a record held 2.4-4.5 entries. The key is its own, so compaction never merges two of them:
retention drops it after the TTL. A value over :data:`MAX_BATCHED_VALUE_BYTES` still goes alone,
as before, and single records are still read (other writers: ``replay --batch``, the batcher;
older versions). Older workers and batch records: one that batched the marks alone reads the
marks and skips the values (it does not see the newer workers' cache entries: a cache miss,
paid again); one from before the marks were batched ignores the whole record with a warning,
so during a rolling upgrade its dedupe does not see the new version's marks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from agents.emit import Record, emit_all
from agents.state.pass_batch import PassBatcher
from schemas.config import KafkaSettings
from streams.kafka.admin import create_topics
from streams.kafka.compacted import CompactedReader
from streams.kafka.producer import KafkaWriter

log = logging.getLogger(__name__)
Clock = Callable[[], float]
# The tail reads every entry the workers write (two per AI result): left at aiokafka's
# defaults (fetch_min_bytes=1) the broker answers each fetch with the few records written
# since the last one, hundreds of fetches a second whose per-request cost was a tenth of the
# worker's CPU at 600 events/s. Asking for 64 KiB or 100 ms, whichever comes first, batches
# them; other workers' entries still arrive within a tenth of a second.
_TAIL_FETCH_MIN_BYTES = 64 * 1024
_TAIL_FETCH_MAX_WAIT_MS = 100
# A value larger than this is written as a record of its own (a long model answer).
MAX_BATCHED_VALUE_BYTES = 16 * 1024
MARKS_PREFIX = "marks/"


class DurableMap:
    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        ttl_s: float,
        cleanup_interval_s: float,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.ttl_s = ttl_s
        self.cleanup_interval_s = cleanup_interval_s
        self._clock = clock
        # key -> write time (value 1), a batch record's value as _TIME + its JSON, or
        # (write time, record bytes | value): _written_at, get
        self._data: dict[str, _Held] = {}
        self._reader: CompactedReader | None = None
        self._cleanup_task: asyncio.Task[None] | None = None
        # put_all's entries, several to a record: (write time, key, "key":value or None: a mark)
        self._batcher: PassBatcher[_Entry] = PassBatcher(topic, MARKS_PREFIX, _encode_entries)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Any | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if type(entry) is float:  # a mark: the dedupe's every lookup
            return 1 if self._clock() - entry <= self.ttl_s else None
        if type(entry) is bytes:  # a batch record's value: its write time, then its JSON
            if self._clock() - _TIME.unpack_from(entry)[0] > self.ttl_s:
                return None
            return orjson.loads(entry[_TIME.size :])  # a copy: cheaper than a memoryview
        written_at, value = entry  # type: ignore[misc]
        if self._clock() - written_at > self.ttl_s:
            return None
        if type(value) is bytes:  # a record as read (no value is bytes: JSON has none)
            return orjson.loads(value)["value"]
        return value

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    async def put(self, writer: KafkaWriter, key: str, value: Any) -> None:
        """Write ``key`` → ``value`` (JSON) to Kafka, then to the local copy: one record of
        its own, a mark too (the rare ones: a dead letter's, a batch answer's)."""
        at = self._clock()
        await emit_all(writer, [Record(self.topic, map_value(value, at), key.encode())])
        self._data[key] = (at, value)

    def remember(self, key: str, value: Any) -> None:
        """Set ``key`` locally only: for facts already durable elsewhere (agents.state.recovery)."""
        self._data[key] = (self._clock(), value)

    def cleanup(self) -> int:
        """Forget expired entries; returns how many."""
        horizon = self._clock() - self.ttl_s
        expired = [key for key, entry in self._data.items() if _written_at(entry) < horizon]
        for key in expired:
            del self._data[key]
        return len(expired)

    def _apply(self, key: bytes | None, raw: bytes | None) -> None:
        if key is None:
            return
        name = key.decode(errors="replace")
        if raw is None:
            self._data.pop(name, None)
            return
        try:
            record = orjson.loads(raw)
            written_at = float(record["written_at"])
            if name.startswith(MARKS_PREFIX) and "marks" in record:
                self._apply_batch(record, written_at)
                return
            value = record["value"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.warning("%s: ignoring a record that is not a map entry (key %r)", self.topic, name)
            return
        current = self._data.get(name)
        if current is None or _written_at(current) <= written_at:
            # The compact forms (module docstring): 1 (not True) as the time alone; anything
            # else as the record's bytes (aiokafka's: exactly the record's size).
            if type(value) is int and value == 1:
                self._data[name] = written_at
            else:
                self._data[name] = (written_at, raw)

    def _apply_batch(self, record: dict[str, Any], written_at: float) -> None:
        """A batch record's entries (module docstring): each mark held as its time, each value
        as one bytes object, its write time (:data:`_TIME`) and its JSON, which :meth:`get`
        parses: no tuple per entry (56 bytes of the ~550 a cache entry took, bench/memory)."""
        data = self._data
        for key in record["marks"]:
            current = data.get(key)
            if current is None or _written_at(current) <= written_at:
                data[key] = written_at
        values: dict[str, Any] = record.get("values") or {}
        stamp = _TIME.pack(written_at)
        for key, value in values.items():
            current = data.get(key)
            if current is None or _written_at(current) <= written_at:
                # joined: a bytes of its exact size (orjson's own keeps a larger buffer)
                data[key] = stamp + orjson.dumps(value)

    async def start(self) -> None:
        """Create the topic if needed and load it to its current end; then keep tailing."""
        started = time.monotonic()
        await create_topics(self.settings, {self.topic: topic_configs(self.ttl_s)})
        reader = CompactedReader(
            self.settings,
            self.topic,
            self._apply,
            client_id=f"{self.topic}-map",
            isolation_level="read_committed",
            fetch_min_bytes=_TAIL_FETCH_MIN_BYTES,
            fetch_max_wait_ms=_TAIL_FETCH_MAX_WAIT_MS,
        )
        await reader.start(load=True)
        self._reader = reader
        self.cleanup()
        log.info(
            "%s: loaded %d records (%d live entries) in %.2f s",
            self.topic,
            reader.records_read,
            len(self._data),
            time.monotonic() - started,
        )
        self._cleanup_task = asyncio.create_task(self._cleanup_loop(), name=f"cleanup {self.topic}")

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval_s)
            expired = self.cleanup()
            if expired:
                log.info("%s: forgot %d expired entries", self.topic, expired)

    async def stop(self) -> None:
        await self._batcher.stop()
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup_task
            self._cleanup_task = None
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None


_Entry = tuple[float, str, bytes | None]
# How an entry is held (DurableMap._data): a mark's write time; a batch record's value as
# _TIME (its write time) + its JSON; (write time, a record's bytes | a value written here).
_Held = float | bytes | tuple[float, Any]
_TIME = struct.Struct("<d")


def _encode_entries(entries: list[_Entry]) -> bytes:
    """A batch record (module docstring) of put_all's entries: its marks by key, its values
    already encoded (``"key":value``, so that each is encoded once and its size known as the
    record grows), and the latest of their write times."""
    marks = [key for _, key, fragment in entries if fragment is None]
    values = [fragment for _, _, fragment in entries if fragment is not None]
    # "marks" always present: workers that batched marks alone read it and skip "values".
    return b"".join(
        (
            b'{"written_at":',
            orjson.dumps(max(at for at, _, _ in entries)),
            b',"marks":',
            orjson.dumps(marks),
            b',"values":{',
            b",".join(values),
            b"}}",
        )
    )


async def put_all(writer: KafkaWriter, entries: Sequence[tuple[DurableMap, str, Any]]) -> None:
    """Write each (map, key, value) to its map's topic, then to the map's local copy. The
    entries join their maps' batch records (module docstring), and those are awaited together:
    the AI stage's "done" mark and answer-cache entry cost one round trip, not two, and share
    their records with the other events' of the same loop pass. A value over
    :data:`MAX_BATCHED_VALUE_BYTES` goes as a record of its own, awaited with them
    (:func:`agents.emit.emit_all`)."""
    stamped = [(target, key, value, target._clock()) for target, key, value in entries]
    waits: list[asyncio.Future[None]] = []
    records: list[Record] = []
    for target, key, value, at in stamped:
        if type(value) is int and value == 1:
            # "key", (an estimate: the record's cap is far below Kafka's limit)
            written = target._batcher.join(writer, (at, key, None), len(key) + 3)
        else:
            encoded = orjson.dumps(value)
            if len(encoded) > MAX_BATCHED_VALUE_BYTES:
                records.append(Record(target.topic, map_value(value, at), key.encode()))
                continue
            fragment = orjson.dumps(key) + b":" + encoded
            written = target._batcher.join(writer, (at, key, fragment), len(fragment) + 1)
        if written not in waits:
            waits.append(written)
    if records:
        await emit_all(writer, records)
    for written in waits:
        # Shielded: a put cancelled while it waits leaves the record to the other puts in it.
        await asyncio.shield(written)
    for target, key, value, at in stamped:
        target._data[key] = (at, value)


def map_value(value: Any, written_at_s: float) -> bytes:
    """A map record's value as every reader of a map topic parses it (:meth:`DurableMap._apply`):
    for writers outside a worker (``replay --batch``, the batcher: :func:`put_all`'s records)."""
    return orjson.dumps({"written_at": written_at_s, "value": value})


def topic_configs(ttl_s: float) -> dict[str, str]:
    """A map topic's configs: compacted (the latest value per key), its segments dropped after
    the TTL."""
    retention_ms = int(ttl_s * 1000)
    return {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(retention_ms),
        # Segments roll often enough for retention and compaction to act.
        "segment.ms": str(max(60_000, min(retention_ms // 10, 86_400_000))),
    }


def _written_at(entry: _Held) -> float:
    if type(entry) is float:
        return entry
    if type(entry) is bytes:
        written_at: float = _TIME.unpack_from(entry)[0]
        return written_at
    return entry[0]  # type: ignore[index]
