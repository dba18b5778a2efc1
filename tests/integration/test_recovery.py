"""Crash recovery finds the results a killed worker wrote but did not mark as done."""

from __future__ import annotations

import uuid

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.state.recovery import done_key, results_since_last_commit
from schemas.config import KafkaSettings
from schemas.headers import REPLAY_HEADER
from schemas.topics import Topics
from streams.kafka.admin import ensure_topics


async def test_results_after_the_groups_commit_are_found(kafka_bootstrap: str) -> None:
    settings = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}", partitions=2
    )
    await ensure_topics(settings)
    topics = Topics(settings.topic_prefix)
    group = f"{settings.topic_prefix}-worker"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(6):
            event = {"source": "helpdesk", "id": f"ev-{i}"}
            key = f"k{i}".encode()
            await producer.send_and_wait(
                topics.enriched,
                orjson.dumps({"flow": "f", "event": event}),
                key=key,
                partition=i % 2,
            )
            if i < 5:  # the sixth event got no result before the crash
                await producer.send_and_wait(
                    topics.results, orjson.dumps({"flow": "f", "event": event}), key=key
                )
            if i in (3, 4):  # and a replay (run "r1") had redone two of them
                await producer.send_and_wait(
                    topics.results,
                    orjson.dumps({"flow": "f", "event": event}),
                    key=key,
                    headers=[(REPLAY_HEADER, b"r1")],
                )
    finally:
        await producer.stop()
    # The group had committed the first two events of partition 0 (ev-0, ev-2) before it died.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topics.enriched, 0)])
        await consumer.commit({TopicPartition(topics.enriched, 0): 2})
    finally:
        await consumer.stop()

    found = await results_since_last_commit(
        settings, group=group, enriched=topics.enriched, results=topics.results
    )
    assert {done_key("f", "helpdesk", f"ev-{i}") for i in (1, 3, 4)} <= found
    assert done_key("f", "helpdesk", "ev-5") not in found
    # The replayed results are remembered under the replay's own markers, and only those.
    replayed = {key for key in found if "/replay/" in key}
    assert replayed == {done_key("f", "helpdesk", f"ev-{i}", "r1") for i in (3, 4)}
    assert replayed == {f"done/f/helpdesk/ev-{i}/replay/r1" for i in (3, 4)}
