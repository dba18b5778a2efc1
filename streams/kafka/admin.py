"""Creating topics on the broker: the catalogue's (:mod:`schemas.topics`) and any other.

:func:`create_topics` is the one place that talks to the broker's admin API for this: the
catalogue (:func:`ensure_topics`), the worker's compacted memories
(:mod:`agents.state.durable_map`), the tests and the benchmarks all create their topics here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from schemas.config import KafkaSettings
from schemas.errors import ConfigError
from schemas.topics import ROLES, TOPIC_CONFIGS, Topics
from streams.kafka.connection import client_kwargs, start_failure

log = logging.getLogger(__name__)


AUTOMATIC_REPLICAS_MAX = 3
"""The automatic replication factor: min(this, brokers). Three copies let one broker fail
(with min.insync.replicas 2) without refusing writes or losing an acknowledged one."""

INSYNC_WITH_THREE_COPIES = 2


async def create_topics(
    settings: KafkaSettings,
    topics: Mapping[str, Mapping[str, str]],
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
) -> list[str]:
    """Create those of ``topics`` (name → topic configs) that do not exist; return their names.

    ``settings`` is the connection (TLS, SASL) and, unless given here, the partitions and
    replication factor. A factor left automatic (``kafka.replication_factor: null``) is
    min(3, the brokers the cluster reports now), so the same file serves a laptop's single
    broker and a production cluster; ``min.insync.replicas`` is ``kafka.min_insync_replicas``,
    or 2 with three copies or more (see :func:`insync_replicas`), unless ``topics`` sets it.

    A topic another process created meanwhile counts as there. Any other refusal raises
    :class:`ConfigError` naming the topic and the broker's reason: aiokafka returns per-topic
    errors in the answer instead of raising them, and a topic silently not created would only
    show later, as a reader waiting for partitions that never come.
    """
    partitions = settings.partitions if partitions is None else partitions
    if replication_factor is None:
        replication_factor = settings.replication_factor
    async with _admin(settings) as admin:
        existing = set(await admin.list_topics())
        missing = {name: configs for name, configs in topics.items() if name not in existing}
        if not missing:
            return []
        if replication_factor is None:
            replication_factor = await _automatic_replication(admin)
        insync = insync_replicas(settings, replication_factor)
        wanted = [
            NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=_with_insync(configs, insync),
            )
            for name, configs in missing.items()
        ]
        response = await admin.create_topics(wanted)
    created = _created(response.topic_errors)
    if created:
        log.info(
            "created topics %s (replication factor %d, min.insync.replicas %s)",
            created,
            replication_factor,
            insync if insync is not None else "broker default",
        )
    return created


def insync_replicas(settings: KafkaSettings, replication_factor: int) -> int | None:
    """``min.insync.replicas`` for new topics of ``replication_factor`` copies; None: the
    broker's default.

    ``kafka.min_insync_replicas`` when set (the config refuses one above an explicit factor;
    with an automatic factor it is capped at the copies there are, since more would refuse
    every acks=all write); else 2 from three copies on: one broker may fail and writes go on,
    and an acknowledged write is on two brokers.
    """
    if settings.min_insync_replicas is not None:
        return min(settings.min_insync_replicas, replication_factor)
    if replication_factor >= AUTOMATIC_REPLICAS_MAX:
        return INSYNC_WITH_THREE_COPIES
    return None


def _with_insync(configs: Mapping[str, str], insync: int | None) -> dict[str, str]:
    merged = dict(configs)
    if insync is not None:
        merged.setdefault("min.insync.replicas", str(insync))
    return merged


async def _automatic_replication(admin: AIOKafkaAdminClient) -> int:
    """min(3, brokers alive in the cluster now): a broker that is down is not counted, so a
    topic created while one of three is down gets 2 copies instead of a refusal."""
    cluster = await admin.describe_cluster()
    brokers = len(cluster.get("brokers") or ())
    return max(1, min(AUTOMATIC_REPLICAS_MAX, brokers))


async def replication_factor(settings: KafkaSettings) -> int:
    """``kafka.replication_factor``, or the automatic factor the cluster gives now (for the
    topics Faust creates itself, which take one number at app creation)."""
    if settings.replication_factor is not None:
        return settings.replication_factor
    async with _admin(settings) as admin:
        return await _automatic_replication(admin)


@contextlib.asynccontextmanager
async def _admin(settings: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client, closed on leaving; a start that fails is the one-line error
    of :func:`streams.kafka.connection.start_failure` (wrong password, untrusted CA, …)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    try:
        await admin.start()
    except KafkaError as exc:
        await admin.close()
        raise await start_failure(settings, exc) from exc
    try:
        yield admin
    finally:
        await admin.close()


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
            "(check kafka.partitions, kafka.replication_factor, kafka.min_insync_replicas and "
            "the broker's policies)"
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
