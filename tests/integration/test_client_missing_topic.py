"""The Publisher/Subscriber on a topic that does not exist: one UnknownTopic at once, naming the
topic and the prefix, not produce_timeout_s of aiokafka's "Topic … not found in cluster
metadata" warnings followed by BrokerUnavailable (publish) or a wait without end (subscribe).

Each test uses a fresh uuid prefix, so its topics exist only if the test creates them; the
shared broker runs with auto.create.topics.enable=false, like a production cluster should.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid

import pytest

from schemas.config import KafkaSettings
from schemas.errors import UnknownTopic
from schemas.topics import Topics
from streams.client import Publisher, Subscriber
from streams.kafka.admin import create_topics
from streams.kafka.producer import KafkaWriter
from tests.support.kafka import read_all


def _prefix() -> str:
    return f"t-missing-{uuid.uuid4().hex[:10]}"


def _noise(caplog: pytest.LogCaptureFixture) -> list[str]:
    """aiokafka's per-retry metadata warnings, and asyncio's unretrieved-exception reports."""
    gc.collect()
    return [
        r.getMessage()
        for r in caplog.records
        if "not found in cluster metadata" in r.getMessage() or "never retrieved" in r.getMessage()
    ]


async def test_publishing_to_a_missing_topic_raises_unknown_topic_at_once(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    prefix = _prefix()
    # A 2 s deadline: without the check, the publish waits it out for metadata and raises
    # BrokerUnavailable, which this pytest.raises does not catch.
    with pytest.raises(UnknownTopic) as raised:
        async with Publisher(
            bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, produce_timeout_s=2.0
        ) as publisher:
            await publisher.publish({"n": 1}, source="helpdesk", type="ticket.created")
    message = str(raised.value)
    assert raised.value.topic == f"{prefix}.events"
    assert "\n" not in message
    assert f"topic '{prefix}.events' does not exist" in message
    assert f"on the broker at {kafka_bootstrap} (topic prefix '{prefix}')" in message
    assert "check the prefix" in message
    assert _noise(caplog) == []


async def test_subscribing_to_a_missing_topic_raises_unknown_topic_at_once(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    prefix = _prefix()
    entered = False
    with pytest.raises(UnknownTopic) as raised:
        async with Subscriber(
            bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, group_id="missing"
        ):
            entered = True  # without the check: entered, and getone() would wait forever
    assert not entered
    assert raised.value.topic == f"{prefix}.results"
    assert f"(topic prefix '{prefix}')" in str(raised.value)
    assert _noise(caplog) == []


async def test_a_missing_topic_given_by_name_is_reported_with_the_prefix(
    kafka_bootstrap: str,
) -> None:
    prefix = _prefix()
    with pytest.raises(UnknownTopic) as raised:
        async with Subscriber(
            bootstrap_servers=kafka_bootstrap,
            topic_prefix=prefix,
            topic=f"other-{prefix}",
            group_id="missing",
        ):
            pass
    message = str(raised.value)
    assert f"topic 'other-{prefix}' does not exist" in message
    assert f"check the name; hookstream's own topics are named {prefix}.<name>" in message


async def test_existing_topics_are_published_to_and_read(kafka_bootstrap: str) -> None:
    """The check lets a topic that exists through, and the subscriber (subscribed on entry,
    after the check) still reads it."""
    prefix = _prefix()
    topics = Topics(prefix)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    await create_topics(settings, {topics.events: {}, topics.results: {}}, partitions=2)
    async with Publisher(settings=settings) as publisher:
        metadata = await publisher.publish(
            {"n": 1}, source="helpdesk", type="ticket.created", key="k"
        )
    assert metadata.topic == topics.events
    assert len(await read_all(kafka_bootstrap, topics.events)) == 1
    async with KafkaWriter(settings) as writer:
        await writer.send(topics.results, b'{"sentinel": true}', key=b"k")
    async with Subscriber(settings=settings, group_id=f"{prefix}-group") as subscriber:
        record = await asyncio.wait_for(subscriber.next_record(), timeout=60)
    assert (record.topic, record.value) == (topics.results, b'{"sentinel": true}')
