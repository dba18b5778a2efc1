"""After a crash: which results are already on Kafka for events the worker will see again?

The AI stage writes a result, then (once Kafka acknowledged it) the event's dedupe marker: two
records on two topics, so a crash can land between them, leaving a result without its marker.
The results topic itself is the truth, so before the agents start, the worker reads back the
results written since the oldest uncommitted event:

1. the worker group's committed offset on each partition of the enriched topic marks the
   first event that will be processed again; the earliest timestamp among those records is
   when the redo window opened;
2. every result written since then (less a margin for clock skew) is read, and each
   (flow, event) found is remembered as done.

This reads only the window a crash can redo (seconds of results with the default 1 s commit
interval), not the whole topic.
"""

from __future__ import annotations

import logging
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from schemas.config import KafkaSettings
from schemas.headers import replay_id, replay_suffix
from streams.kafka.connection import client_kwargs

log = logging.getLogger(__name__)
_MARGIN_MS = 60_000


def done_key(flow: str, source: str, event_id: str, replay: str | None = None) -> str:
    return f"done/{flow}/{source}/{event_id}{replay_suffix(replay)}"


def dead_key(flow: str, source: str, event_id: str, replay: str | None = None) -> str:
    """The AI stage's mark of a (flow, event) it dead-lettered: enrich drops a sender's retry
    of it, as it does one whose result is done; the AI stage itself ignores it, so a redrive
    of the dead letter still runs (:mod:`agents.stages.enrich`)."""
    return f"dead/{flow}/{source}/{event_id}{replay_suffix(replay)}"


async def _topic_partitions(
    admin: AIOKafkaAdminClient, topics: list[str]
) -> dict[str, list[TopicPartition]]:
    """Partitions per topic, from the broker.

    Not from the consumer's metadata: a consumer only refreshes the topics it is assigned, so
    once it was assigned the enriched topic it did not know the results topic — and recovery
    silently found nothing (caught by the SIGKILL test).
    """
    described = await admin.describe_topics(topics)
    return {
        entry["topic"]: [
            TopicPartition(entry["topic"], p["partition"])
            for p in sorted(entry["partitions"], key=lambda part: int(part["partition"]))
        ]
        for entry in described
        if entry.get("error_code", 0) == 0
    }


async def _redo_window_start_ms(
    consumer: AIOKafkaConsumer,
    committed: dict[TopicPartition, OffsetAndMetadata],
    tps: list[TopicPartition],
) -> int | None:
    """Timestamp of the oldest event the group will process again, or None if there is none."""
    if not tps:
        return None
    ends = await consumer.end_offsets(tps)
    start_ms: int | None = None
    for tp in tps:
        meta = committed.get(tp)
        offset = meta.offset if meta is not None and meta.offset >= 0 else 0
        if offset >= ends[tp]:
            continue
        consumer.assign([tp])
        consumer.seek(tp, offset)
        record = await consumer.getone()
        start_ms = record.timestamp if start_ms is None else min(start_ms, record.timestamp)
    return start_ms


async def results_since_last_commit(
    settings: KafkaSettings, *, group: str, enriched: str, results: str
) -> set[str]:
    """Dedupe keys (``done/<flow>/<source>/<id>``, plus ``/replay/<id>`` for a replayed one)
    of results a crash may have left unmarked."""
    started = time.monotonic()
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    found: set[str] = set()
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        partitions = await _topic_partitions(admin, [enriched, results])
    finally:
        await admin.close()
    try:
        start_ms = await _redo_window_start_ms(consumer, committed, partitions.get(enriched, []))
        if start_ms is None:
            return found
        tps = partitions.get(results, [])
        since = await consumer.offsets_for_times({tp: start_ms - _MARGIN_MS for tp in tps})
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        behind = set()
        for tp in tps:
            found_offset = since.get(tp)
            if found_offset is not None and found_offset.offset < ends[tp]:
                consumer.seek(tp, found_offset.offset)
                behind.add(tp)
        while behind:
            batch = await consumer.getmany(*behind, timeout_ms=500)
            for messages in batch.values():
                for message in messages:
                    try:
                        value = orjson.loads(message.value or b"")
                        event = value["event"]
                        # A replayed result carries its replay's header: its marker is the
                        # replay's own, or a crash mid-replay would call the model twice.
                        replay = replay_id(message)
                        found.add(done_key(value["flow"], event["source"], event["id"], replay))
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
            for tp in list(behind):
                if await consumer.position(tp) >= ends[tp]:
                    behind.discard(tp)
    finally:
        await consumer.stop()
    log.info(
        "recovery: %d results since the last commit are already on Kafka (%.2f s)",
        len(found),
        time.monotonic() - started,
    )
    return found
