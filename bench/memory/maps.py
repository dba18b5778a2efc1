"""One memory measurement in a fresh process: a worker's durable map holding N entries.

``python bench/memory/maps.py MODE COUNT [TREE]`` prints one JSON line. The map is filled
through ``DurableMap._apply``, the path every record takes when a worker loads the topic and
when its tail reads what any worker wrote (its own writes included), so what is measured is
what a worker holds after a restart or after a day of traffic. ``TREE`` is a source tree to
import hookstream from (the code before a change, checked out elsewhere); default this one.

Two kinds of entries, each in the record forms a map topic holds:
- ``dedupe``: the "done" marks the AI stage writes per event and flow
  (``done/<flow>/<source>/<id>``; half of the keys enrich's ``seen/<source>/<id>`` of before
  session 8), value 1;
- ``cache``: AI answer-cache entries (sha256 hex key; provider, model, a three-field output,
  token usage: ~260 bytes of JSON).

Forms, the suffix of MODE:
- none (``dedupe``, ``cache``): one record per entry, ``{"written_at", "value"}``, the form a
  worker wrote before session 11 (marks) and 12 (cache entries), and ``replay --batch`` and the
  batcher still write;
- ``@N``: batch records of N entries each, ``marks/<id>`` → ``{"written_at", "marks",
  "values"}``, encoded by the worker's own encoder (``durable_map._encode_entries``), what
  ``put_all`` writes today; ``@1`` is an event finishing alone (a low rate);
- ``@cap``: batch records as full as the worker's cap allows (``pass_batch``: 1,000 entries or
  128 KiB by ``put_all``'s size estimates).

Modes:
- ``KIND[@FORM]``: the RSS growth over the fill, bytes per entry, the time of one lookup;
- ``read-KIND``: CPU per entry read, every form interleaved in one process: the map first
  filled with COUNT entries in batch records of 4 (a worker's typical, then ``gc.freeze`` as
  the worker does after start-up), then rounds that each apply 10,000 more entries in every
  form, in an order rotated each round, CPU time of ``_apply`` per entry (aiokafka's own cost
  per record not in it);
- ``set``: baseline, a plain ``set`` of the dedupe keys (the least a dedupe can hold: the keys);
- ``dict_bytes``: baseline, a plain ``dict`` of the cache keys → each entry's JSON bytes.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import statistics
import struct
import sys
import time
import timeit
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TREE = Path(sys.argv[3]).resolve() if len(sys.argv) > 3 else Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TREE))

import orjson  # noqa: E402

from agents.state import durable_map  # noqa: E402
from agents.state.durable_map import DurableMap  # noqa: E402
from agents.state.pass_batch import MAX_ENTRIES_PER_RECORD, MAX_RECORD_BYTES  # noqa: E402
from schemas.config import KafkaSettings  # noqa: E402

SENTIMENTS = ("positive", "neutral", "negative")
READ_FORMS = ("single", "1", "4", "cap")
READ_CHUNK = 10_000
READ_ROUNDS = 7
# The Kafka batches the records are decoded from (aiokafka's default producer batch size).
KAFKA_BATCH_BYTES = 16 * 1024
Record = tuple[bytes, bytes]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def dedupe_key(index: int) -> str:
    # A Standard Webhooks id is "msg_" and 27 characters; half the keys are "seen" marks (the
    # form of before session 8), half the AI stage's "done" marks, one of each per event.
    event_id = f"msg_{hashlib.md5(b'%d' % (index // 2)).hexdigest()[:27]}"  # noqa: S324
    if index % 2:
        return f"done/triage/helpdesk/{event_id}"
    return f"seen/helpdesk/{event_id}"


def cache_key(index: int) -> str:
    return hashlib.sha256(b"%d" % index).hexdigest()


def cache_value(index: int) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "gpt-4o-mini-2024-07-18",
        "output": {
            "sentiment": SENTIMENTS[index % 3],
            "priority": "high" if index % 2 else "low",
            "summary": f"Customer {index} reports the export broken since the last update.",
        },
        "usage": {"prompt_tokens": 180 + index % 40, "completion_tokens": 42, "total_tokens": 222},
    }


def entry(kind: str, index: int) -> tuple[str, Any]:
    if kind == "dedupe":
        return dedupe_key(index), 1
    return cache_key(index), cache_value(index)


def as_read(value: bytes) -> bytes:
    """Bytes of exactly their size, as aiokafka hands a record's value. (orjson's own result
    is shrunk from a larger buffer: kept, each costs ~4 KiB of RSS, not its size.)"""
    return bytes(memoryview(value))


def records(kind: str, form: str, first: int, count: int, now: float) -> Iterator[Record]:
    """The records holding entries ``first`` … ``first + count - 1`` of ``kind`` in ``form``
    (module docstring), as the tail reads them: (key bytes, value bytes)."""
    if form == "single":
        for index in range(first, first + count):
            key, value = entry(kind, index)
            yield key.encode(), as_read(orjson.dumps({"written_at": now, "value": value}))
        return
    per_record = MAX_ENTRIES_PER_RECORD if form == "cap" else int(form)
    gathered: list[tuple[float, str, bytes | None]] = []
    size = 0
    for index in range(first, first + count):
        key, value = entry(kind, index)
        # put_all's entries and size estimates (agents.state.durable_map.put_all)
        item: tuple[float, str, bytes | None]
        if value == 1:
            item, item_size = (now, key, None), len(key) + 3
        else:
            fragment = orjson.dumps(key) + b":" + orjson.dumps(value)
            item, item_size = (now, key, fragment), len(fragment) + 1
        if gathered and (len(gathered) >= per_record or size + item_size > MAX_RECORD_BYTES):
            yield _batch(gathered)
            gathered, size = [], 0
        gathered.append(item)
        size += item_size
    if gathered:
        yield _batch(gathered)


def _batch(gathered: list[tuple[float, str, bytes | None]]) -> Record:
    key = f"{durable_map.MARKS_PREFIX}{os.urandom(16).hex()}".encode()
    return key, as_read(durable_map._encode_entries(gathered))


def kafka_batches(chunk: list[Record]) -> bytes:
    """``chunk`` as a fetch response's bytes: record batches of up to KAFKA_BATCH_BYTES
    (a record larger than that in a batch of its own), as a producer packs them."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    out = bytearray()

    def builder() -> Any:
        return DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, KAFKA_BATCH_BYTES)

    def close(built: bytearray, base_offset: int) -> None:
        # a batch's first field, its first offset, as the broker sets it
        struct.pack_into(">q", built, 0, base_offset)
        out.extend(built)

    batch, base, in_batch = builder(), 0, 0
    for key, raw in chunk:
        if batch.append(in_batch, None, key, raw, []) is None:
            close(batch.build(), base)
            batch, base, in_batch = builder(), base + in_batch, 0
            batch.append(in_batch, None, key, raw, [])
        in_batch += 1
    close(batch.build(), base)
    return bytes(out)


def decode(buffer: bytes) -> int:
    """What aiokafka's fetcher does with a fetch response's records before the reader's
    callback sees them (CRC check, record parse, ConsumerRecord), its network part aside."""
    from aiokafka.consumer.fetcher import READ_COMMITTED, PartitionRecords
    from aiokafka.record.memory_records import MemoryRecords
    from aiokafka.structs import TopicPartition

    parsed = PartitionRecords(
        TopicPartition("bench", 0), MemoryRecords(buffer), [], 0, None, None, True, READ_COMMITTED
    )
    read = 0
    for record in parsed:
        read += record.key is not None and record.value is not None
    return read


def new_map(kind: str) -> DurableMap:
    return DurableMap(KafkaSettings(), f"bench.{kind}", ttl_s=7 * 86400, cleanup_interval_s=60)


def fill(kind: str, form: str, count: int, now: float) -> tuple[DurableMap, int]:
    """A map filled with ``count`` entries in ``form``; and how many records held them."""
    held = new_map(kind)
    read = 0
    for key, raw in records(kind, form, 0, count, now):
        held._apply(key, raw)
        read += 1
    return held, read


def read_cpu(kind: str, count: int, now: float) -> dict[str, Any]:
    """CPU per entry read for every form, interleaved (module docstring)."""
    held, _ = fill(kind, "4", count, now)
    gc.collect()
    gc.freeze()
    chunks: dict[str, list[list[Record]]] = {}
    first = count
    for form in READ_FORMS:
        chunks[form] = []
        for _ in range(READ_ROUNDS):
            chunks[form].append(list(records(kind, form, first, READ_CHUNK, now)))
            first += READ_CHUNK
    fetched = {form: [kafka_batches(chunk) for chunk in chunks[form]] for form in READ_FORMS}
    per_entry: dict[str, list[float]] = {form: [] for form in READ_FORMS}
    decode_per_entry: dict[str, list[float]] = {form: [] for form in READ_FORMS}
    for round_index in range(READ_ROUNDS):
        shift = round_index % len(READ_FORMS)
        for form in READ_FORMS[shift:] + READ_FORMS[:shift]:
            chunk = chunks[form][round_index]
            started = time.process_time()
            assert decode(fetched[form][round_index]) == len(chunk)
            decode_per_entry[form].append((time.process_time() - started) / READ_CHUNK * 1e6)
            apply = held._apply
            started = time.process_time()
            for key, raw in chunk:
                apply(key, raw)
            per_entry[form].append((time.process_time() - started) / READ_CHUNK * 1e6)
    assert len(held) == first, "the map lost an entry"
    return {
        "mode": f"read-{kind}",
        "entries_held": count,
        "rounds": READ_ROUNDS,
        "chunk_entries": READ_CHUNK,
        "forms": {
            form: {
                "entries_per_record": round(READ_CHUNK / len(chunks[form][0]), 1),
                "record_bytes": round(
                    sum(len(raw) for _, raw in chunks[form][0]) / len(chunks[form][0])
                ),
                "apply_us_per_entry": round(statistics.median(per_entry[form]), 3),
                "apply_us_per_entry_all": [round(us, 3) for us in per_entry[form]],
                "decode_us_per_entry": round(statistics.median(decode_per_entry[form]), 3),
                "decode_us_per_entry_all": [round(us, 3) for us in decode_per_entry[form]],
                "read_us_per_entry": round(
                    statistics.median(
                        a + d for a, d in zip(per_entry[form], decode_per_entry[form], strict=True)
                    ),
                    3,
                ),
            }
            for form in READ_FORMS
        },
    }


def main() -> int:
    mode, count = sys.argv[1], int(sys.argv[2])
    now = time.time()
    if mode.startswith("read-"):
        print(json.dumps(read_cpu(mode.removeprefix("read-"), count, now)))
        return 0
    kind, _, form = mode.partition("@")
    holder: Any
    read: int | None = None
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    if kind in ("dedupe", "cache"):
        holder, read = fill(kind, form or "single", count, now)
        probe = entry(kind, count // 2)[0]
        assert holder.get(probe) == entry(kind, count // 2)[1], "the map lost an entry"
        lookup = timeit.Timer(lambda: holder.get(probe), timer=time.process_time)
    elif kind == "set":
        holder = {dedupe_key(index) for index in range(count)}
        probe = dedupe_key(count // 2)
        lookup = timeit.Timer(lambda: probe in holder, timer=time.process_time)
    elif kind == "dict_bytes":
        holder = {
            cache_key(index): as_read(orjson.dumps(cache_value(index))) for index in range(count)
        }
        probe = cache_key(count // 2)
        lookup = timeit.Timer(lambda: holder.get(probe), timer=time.process_time)
    else:
        raise SystemExit(f"maps.py: unknown mode {mode!r}")
    fill_s = time.perf_counter() - started
    gc.collect()
    grown = rss_bytes() - before
    entries = len(holder)
    loops = 200_000
    lookup_us = min(lookup.repeat(3, loops)) / loops * 1e6
    print(
        json.dumps(
            {
                "mode": mode,
                "entries": entries,
                "records": read,
                "rss_growth_mib": round(grown / 2**20, 1),
                "bytes_per_entry": round(grown / count),
                "lookup_us": round(lookup_us, 3),
                "fill_s": round(fill_s, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
