"""Creating topics on the broker: the catalogue's (:mod:`schemas.topics`) and any other.

:func:`create_topics` is the one place that talks to the broker's admin API for this: the
catalogue (:func:`ensure_topics`), the worker's compacted memories
(:mod:`agents.state.durable_map`), the tests and the benchmarks all create their topics here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from schemas.config import KafkaSettings
from schemas.errors import ConfigError
from schemas.topics import ROLES, TOPIC_CONFIGS, Topics
from streams.kafka.connection import client_kwargs, start_failure

log = logging.getLogger(__name__)


async def create_topics(
    settings: KafkaSettings,
    topics: Mapping[str, Mapping[str, str]],
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
) -> list[str]:
    """Create those of ``topics`` (name → topic configs) that do not exist; return their names.

    ``settings`` is the connection (TLS, SASL) and, unless given here, the partitions and
    replication factor.

    A topic another process created meanwhile counts as there. Any other refusal raises
    :class:`ConfigError` naming the topic and the broker's reason: aiokafka returns per-topic
    errors in the answer instead of raising them, and a topic silently not created would only
    show later, as a reader waiting for partitions that never come.
    """
    partitions = settings.partitions if partitions is None else partitions
    if replication_factor is None:
        replication_factor = settings.replication_factor
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    try:
        await admin.start()
    except KafkaError as exc:
        await admin.close()
        raise await start_failure(settings, exc) from exc
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=dict(configs),
            )
            for name, configs in topics.items()
            if name not in existing
        ]
        if not wanted:
            return []
        response = await admin.create_topics(wanted)
    finally:
        await admin.close()
    created = _created(response.topic_errors)
    if created:
        log.info("created topics %s", created)
    return created


def _created(topic_errors: list[tuple[Any, ...]]) -> list[str]:
    """The topics this request created; raises for those the broker refused.

    One that already exists (another process created it meanwhile) is neither.
    """
    created: list[str] = []
    problems = []
    for entry in topic_errors:
        name, code = entry[0], entry[1]
        if code == 0:
            created.append(name)
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        reason = entry[2] if len(entry) > 2 and entry[2] else for_code(code).__name__
        problems.append(
            f"kafka: the broker refused to create topic {name!r}: {reason} "
            "(check kafka.partitions, kafka.replication_factor and the broker's policies)"
        )
    if problems:
        raise ConfigError(problems)
    return created


async def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create the catalogue's topics if missing; return the names created.

    The broker should not auto-create topics (a typo would silently make a new one), so every
    entry point calls this before producing.
    """
    names = Topics(settings.topic_prefix).all()
    return await create_topics(
        settings,
        {name: TOPIC_CONFIGS.get(role, {}) for role, name in zip(ROLES, names, strict=True)},
        partitions=settings.partitions,
        replication_factor=settings.replication_factor,
    )
