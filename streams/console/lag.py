"""Consumer lag per stage, computed from the broker (the overview's lag table).

Each stage is a consumer group reading one topic: the worker's group ``<prefix>-worker`` reads
``events`` (enrich) and ``enriched`` (ai), the sinks' group ``<prefix>-sinks`` reads
``results``. Lag is the partitions' end offsets minus the group's committed offsets, as the
group coordinator knows them: one answer however many processes share the group, and one that
exists while no process runs (a stopped stage's lag keeps growing, which is what to see).
A partition the group never committed counts from its first offset.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable
from schemas.topics import Topics
from streams.kafka.connection import client_kwargs
from streams.kafka.reader import new_consumer


@dataclass(frozen=True, slots=True)
class StageLag:
    stage: str
    group: str
    topic: str
    lag_by_partition: dict[int, int]
    committed_any: bool  # False: the group has never committed on this topic

    @property
    def total(self) -> int:
        return sum(self.lag_by_partition.values())


def stages(settings: KafkaSettings) -> list[tuple[str, str, str]]:
    """(stage, group, topic) of every stage that consumes a topic."""
    topics = Topics(settings.topic_prefix)
    worker, sinks = f"{settings.topic_prefix}-worker", f"{settings.topic_prefix}-sinks"
    return [
        ("enrich", worker, topics.events),
        ("ai", worker, topics.enriched),
        ("sinks", sinks, topics.results),
    ]


async def stage_lags(settings: KafkaSettings) -> list[StageLag]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    consumer = new_consumer(settings)
    try:
        await admin.start()
        await consumer.start()
        committed: dict[str, dict[TopicPartition, int]] = {}
        for _, group, _ in stages(settings):
            if group not in committed:
                offsets = await admin.list_consumer_group_offsets(group)
                committed[group] = {tp: meta.offset for tp, meta in offsets.items()}
        found = []
        for stage, group, topic in stages(settings):
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if not tps:
                continue
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            mine = committed[group]
            lag = {tp.partition: max(ends[tp] - max(mine.get(tp, -1), starts[tp]), 0) for tp in tps}
            found.append(
                StageLag(stage, group, topic, lag, any(mine.get(tp, -1) >= 0 for tp in tps))
            )
        return found
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot read the consumer groups' offsets: {exc}") from exc
    finally:
        await consumer.stop()
        await admin.close()
