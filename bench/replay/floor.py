"""What any replay written in this stack costs at least: the floor under ``hookstream replay``.

Two parts of a Python replay that no design within the stack the design card fixes (CPython,
aiokafka) can remove, measured beside kcat in the same rounds (issue 16):

- **the interpreter with the clients' imports**: a process that imports asyncio, aiokafka and
  pydantic (the config's models) and exits, timed from spawn;
- **the copy loop alone**: each record of the window decoded from its fetched batch and appended,
  with the replay header, to a new batch, by aiokafka's C record classes (what
  ``streams.ops.replay`` does per record, without fetching, writing, filtering or pricing), over
  batches already in memory. Every record must be rebuilt: its headers gain the replay's, so
  its length, its batch's CRC and the producer's sequence numbers change.

Their sum leaves out the connections, the fetches, the writes and their acks. So does a third
figure, the whole process of **the least copier**: ``python bench/replay/floor.py BOOTSTRAP
SOURCE TARGET T0 T1`` imports aiokafka and the replay's reader, connects, fixes the window and
copies it as ``hookstream replay`` does (raw fetched batches, the replay header, two idempotent
producers, acks=all, its produce requests' encoding), with none of its config, filter,
estimate or pricing. kcat's whole run is compared with each.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

_BATCH_BYTES = 1024 * 1024
IMPORTS = "import asyncio, aiokafka, pydantic"


def _builder() -> DefaultRecordBatchBuilder:
    return DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=_BATCH_BYTES,
    )


def fetched_batches(records: int, value: bytes, key: bytes) -> bytes:
    """``records`` records in 1 MiB batches, as a fetch response holds them; no record headers,
    as the bench's window (run.py's ``bench_event``)."""
    headers: list[tuple[str, bytes]] = []
    batches: list[bytes] = []
    builder, offset = _builder(), 0
    for _ in range(records):
        if builder.append(offset, None, key, value, headers) is None:
            batches.append(bytes(builder.build()))
            builder, offset = _builder(), 0
            builder.append(offset, None, key, value, headers)
        offset += 1
    batches.append(bytes(builder.build()))
    return b"".join(batches)


def copy_loop_cpu_s(fetched: bytes, replay_id: bytes = b"0123456789ab") -> tuple[float, int]:
    """CPU seconds to decode every record of ``fetched`` and rebuild it with the replay header;
    and how many records that was."""
    marker = ("hookstream-replay", replay_id)
    only_marker = [marker]
    started = time.process_time()
    records = MemoryRecords(fetched)
    builder, count, copied = _builder(), 0, 0
    while records.has_next():
        for record in records.next_batch():
            headers = record.headers
            if headers:  # as streams.ops.replay: a stale replay header replaced
                headers = [h for h in headers if h[0] != marker[0]]
                headers.append(marker)
            else:
                headers = only_marker
            if builder.append(count, None, record.key, record.value, headers) is None:
                builder.build()
                builder, count = _builder(), 0
                builder.append(count, None, record.key, record.value, headers)
            count += 1
            copied += 1
    builder.build()
    return time.process_time() - started, copied


def interpreter_s() -> tuple[float, float]:
    """Wall and CPU seconds of a process that only imports what a replay's clients need."""
    before = os.times()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], check=True)
    wall_s = time.perf_counter() - started
    after = os.times()
    cpu_s = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall_s, cpu_s


async def least_copy(bootstrap: str, source: str, target: str, start_ms: int, end_ms: int) -> int:
    """Copy ``source``'s records with start_ms <= timestamp < end_ms to ``target`` (its
    partitions, in order), each with the replay header; returns how many."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.kafka import produce_encoding
    from streams.kafka.reader import partitions_of, read_window_raw, window

    produce_encoding.install()  # as the replay: each request joined once

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=_BATCH_BYTES,
        check_crcs=False,
    )
    producers = [
        AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=20,
            max_batch_size=_BATCH_BYTES,
            max_request_size=8 * _BATCH_BYTES,
        )
        for _ in range(2)
    ]
    await asyncio.gather(consumer.start(), *(p.start() for p in producers))
    try:
        start = datetime.fromtimestamp(start_ms / 1000, UTC)
        end = datetime.fromtimestamp(end_ms / 1000, UTC)
        partitions = await partitions_of(consumer, source)
        win, *_ = await asyncio.gather(
            window(consumer, source, start, end, partitions=partitions),
            *(p.partitions_for(target) for p in producers),
        )
        marker = ("hookstream-replay", b"0123456789ab")
        only_marker = [marker]
        open_batches: dict[int, tuple[Any, Any, int]] = {}
        acks: list[asyncio.Future[Any]] = []
        copied = 0

        async def send(partition: int) -> None:
            batch, _, count = open_batches.pop(partition)
            batch._relative_offset = count
            batch.close()
            producer = producers[partition % len(producers)]
            acks.append(await producer.send_batch(batch, target, partition=partition))

        async for partition, records in read_window_raw(consumer, win):
            held = open_batches.get(partition)
            if held is None:
                batch = producers[partition % len(producers)].create_batch()
                held = (batch, batch._builder.append, 0)
            batch, append, count = held
            for record in records:
                headers = record.headers
                if headers:
                    headers = [h for h in headers if h[0] != marker[0]]
                    headers.append(marker)
                else:
                    headers = only_marker
                if append(count, None, record.key, record.value, headers) is None:
                    open_batches[partition] = (batch, append, count)
                    await send(partition)
                    batch = producers[partition % len(producers)].create_batch()
                    append, count = batch._builder.append, 0
                    append(0, None, record.key, record.value, headers)
                count += 1
                copied += 1
            open_batches[partition] = (batch, append, count)
        for partition in list(open_batches):
            await send(partition)
        await asyncio.gather(*acks)
        return copied
    finally:
        await asyncio.gather(*(p.stop() for p in producers))
        await consumer.stop()


def run_least_copy(
    bootstrap: str, source: str, target: str, start_ms: int, end_ms: int
) -> tuple[float, float, int]:
    """The least copier as a whole process, spawn to exit: (seconds, CPU seconds, copied)."""
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, bootstrap, source, target, str(start_ms), str(end_ms)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    wall_s = time.perf_counter() - started
    after = os.times()
    cpu_s = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall_s, cpu_s, int(done.stdout.strip())


if __name__ == "__main__":
    bootstrap_arg, source_arg, target_arg, t0_arg, t1_arg = sys.argv[1:]
    print(asyncio.run(least_copy(bootstrap_arg, source_arg, target_arg, int(t0_arg), int(t1_arg))))
