"""Creating the topics of the catalogue (:mod:`schemas.topics`) on the broker."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable
from schemas.topics import ROLES, TOPIC_CONFIGS, Topics

log = logging.getLogger(__name__)


async def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create the catalogue's topics if missing; return the names created.

    The broker should not auto-create topics (a typo would silently make a new one), so every
    entry point calls this before producing.
    """
    topics = Topics(settings.topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
        ) from exc
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=name,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs=TOPIC_CONFIGS.get(role, {}),
            )
            for role, name in zip(ROLES, topics.all(), strict=True)
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                log.debug("topics created concurrently by another process")
            created = [t.name for t in wanted]
            log.info("created topics %s", created)
    finally:
        await admin.close()
    return created
