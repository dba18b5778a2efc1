"""A topic read right after its creation: :func:`streams.kafka.reader.partitions_of` waits
for it to show in the broker's metadata when told it exists, and says it is unknown otherwise.

A CreateTopics answer means the controller has the topic; the broker answering the next
Metadata request may not have applied it yet. ``hookstream batcher`` creates its journal and
reads it at once: on a loaded broker it stopped with "topic <prefix>.ai-batch-jobs does not
exist" (the CLI's exit 4), which is how
``test_a_batcher_paused_between_its_intent_and_its_submission_submits_nothing_twice`` failed
once in CI, after 60 s. Here the lag is made certain: the lookup starts before the topic is
created.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

import streams.ops.batcher as batcher_module
from schemas.config import KafkaSettings
from schemas.config_loader import load_config
from schemas.errors import BrokerUnavailable, UnknownTopic
from streams.kafka.admin import create_topics
from streams.kafka.reader import new_consumer, partitions_of
from tests.support.kafka import delete_topics
from tests.support.sinkstack import EXAMPLE

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def consumer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaConsumer]:
    started = new_consumer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def test_a_topic_created_while_its_partitions_are_looked_up_is_found(
    kafka_bootstrap: str, consumer: AIOKafkaConsumer
) -> None:
    topic = f"appears-{uuid.uuid4().hex[:10]}"
    lookup = asyncio.create_task(partitions_of(consumer, topic, appear_within_s=30.0))
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    try:
        await create_topics(settings, {topic: {}}, partitions=3)
        found = await lookup
    finally:
        await delete_topics(kafka_bootstrap, [topic])
    assert found == [TopicPartition(topic, p) for p in range(3)]


async def test_a_topic_that_does_not_appear_is_unknown_once_the_wait_is_over(
    consumer: AIOKafkaConsumer,
) -> None:
    topic = f"never-{uuid.uuid4().hex[:10]}"
    with pytest.raises(UnknownTopic, match=topic):
        await partitions_of(consumer, topic, appear_within_s=0.3)
    with pytest.raises(UnknownTopic, match=topic):  # without a wait: at once, as before
        await partitions_of(consumer, topic)


async def test_a_batcher_journal_that_never_appears_is_the_brokers_lag_not_a_missing_topic(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batcher creates its journal itself: if the broker's metadata still lacks it once the
    # wait is over, "start the gateway first" (the CLI's answer to a missing topic, exit 4)
    # would send the operator the wrong way. It is the broker's lag: BrokerUnavailable (exit 3).
    monkeypatch.setattr(batcher_module, "TOPIC_APPEARS_WITHIN_S", 0.3)
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "HOOKSTREAM_TOPIC_PREFIX": "never-made"}
    config = load_config(EXAMPLE, env=env, require_secrets=False)
    batcher = batcher_module.Batcher(config, backend=cast(Any, None))
    with pytest.raises(BrokerUnavailable, match=r"journal 'never-made\.ai-batch-jobs'"):
        await batcher._read_journal()
