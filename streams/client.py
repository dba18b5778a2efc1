"""Publish events to hookstream and subscribe to its results, from any Python service.

::

    async with Publisher(bootstrap_servers="127.0.0.1:9092") as publisher:
        await publisher.publish({"customer_id": "cus_1", "message": "hi"},
                                source="helpdesk", type="ticket.created", key="cus_1")

    async with Subscriber(bootstrap_servers="127.0.0.1:9092", group_id="billing") as results:
        async for result in results:          # AIResult, in order per key
            await handle(result)              # committed once the loop asks for the next one,
                                              # or on leaving the block without an exception

The publisher wraps each payload in the same CloudEvents envelope the gateway writes and sends it
to ``<prefix>.events`` with ``acks=all`` and the idempotent producer; ``publish`` returns once the
event is durable, ``publish_many`` sends a batch concurrently (through the gateway's batching
writer: one Kafka batch per partition per round, each under the topic's ``max.message.bytes``)
and returns once every one is; an event over that limit raises
:class:`~schemas.errors.RecordTooLarge`. An event's id (given, or a uuid) is its
identity downstream: publishing the same id twice is harmless.

The subscriber reads a results topic in its own consumer group and commits a result's offset
only after the caller has handled it (when the ``async for`` asks for the next one, or on a
clean exit from the ``async with``, ``break`` included): a crash in between redelivers that
result, never skips it.

Both check their topic once, on entering the ``async with``: a topic that does not exist (a
wrong prefix, or hookstream's gateway has not run yet) raises
:class:`~schemas.errors.UnknownTopic` at once, naming the topic and the prefix, instead of
aiokafka waiting for its metadata with a warning per retry and then ``BrokerUnavailable``.

Against a secured cluster, pass ``settings=`` (a :class:`~schemas.config.KafkaSettings`, e.g.
``load_config(path).kafka``): both take their TLS and SASL settings from it, through the same
:mod:`streams.kafka.connection` as hookstream's own processes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, RecordMetadata
from pydantic import ValidationError

from schemas.codec import dumps
from schemas.config import KafkaSettings
from schemas.errors import ToolError, UnknownTopic
from schemas.events import AIResult, CloudEvent
from schemas.topics import Topics
from streams.kafka.batch_writer import BatchingKafkaWriter
from streams.kafka.connection import client_kwargs, start_failure
from streams.kafka.producer import Headers


def make_event(
    data: Any,
    *,
    source: str,
    type: str,
    key: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
    trace_id: str | None = None,
) -> CloudEvent:
    """The CloudEvent the gateway would have written for this payload."""
    event_id = id or str(uuid.uuid4())
    return CloudEvent(
        id=event_id,
        source=source,
        type=type,
        time=time or datetime.now(UTC),
        data=data,
        partitionkey=key or event_id,
        traceid=trace_id or uuid.uuid4().hex,
    )


class Publisher:
    """An async context manager that publishes CloudEvents to ``<prefix>.events``."""

    def __init__(
        self,
        *,
        bootstrap_servers: str = "127.0.0.1:9092",
        topic_prefix: str = "hookstream",
        linger_ms: int = 5,
        produce_timeout_s: float = 30.0,
        settings: KafkaSettings | None = None,
    ) -> None:
        self.settings = settings or KafkaSettings(
            bootstrap_servers=bootstrap_servers,
            topic_prefix=topic_prefix,
            linger_ms=linger_ms,
            produce_timeout_s=produce_timeout_s,
        )
        self.topic = Topics(self.settings.topic_prefix).events
        self._writer = BatchingKafkaWriter(self.settings, client_id="hookstream-publisher")

    async def __aenter__(self) -> Publisher:
        await self._writer.start()
        try:
            if self.topic not in await self._writer.topics():
                raise missing_topic(self.topic, self.settings)
        except BaseException:
            await self._writer.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._writer.stop()

    async def publish_event(self, event: CloudEvent, *, headers: Headers = ()) -> RecordMetadata:
        """Send one envelope; return its partition/offset once the broker has it (acks=all)."""
        return await self._writer.send(
            self.topic, dumps(event), key=event.partitionkey.encode(), headers=headers
        )

    async def publish(
        self,
        data: Any,
        *,
        source: str,
        type: str,
        key: str | None = None,
        id: str | None = None,
    ) -> RecordMetadata:
        """Wrap ``data`` as a CloudEvent and send it; returns when it is durable."""
        return await self.publish_event(make_event(data, source=source, type=type, key=key, id=id))

    async def publish_many(self, events: Iterable[CloudEvent]) -> list[RecordMetadata]:
        """Send a batch concurrently; return once every event is durable (in input order)."""
        return list(await asyncio.gather(*(self.publish_event(event) for event in events)))


class Subscriber:
    """An async iterator of typed results in its own consumer group; see the module doc.

    A result counts as handled once the caller asks for the next one, or leaves the
    ``async with`` block without an exception (``break`` included); only handled results are
    committed. An exception out of the block commits nothing more: the result being handled
    comes again to the group's next consumer.
    """

    def __init__(
        self,
        *,
        group_id: str,
        bootstrap_servers: str = "127.0.0.1:9092",
        topic_prefix: str = "hookstream",
        topic: str | None = None,
        from_beginning: bool = True,
        settings: KafkaSettings | None = None,
    ) -> None:
        # ``settings`` (e.g. a loaded config's ``kafka``) carries TLS and SASL too, and its
        # prefix and brokers replace ``topic_prefix`` and ``bootstrap_servers``.
        self.settings = settings or KafkaSettings(
            bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix
        )
        self.topic = topic or Topics(self.settings.topic_prefix).results
        self.group_id = group_id
        # Subscribed on entry, once the topic is known to exist: subscribed to a missing one,
        # the consumer would wait for it without end, warning on every metadata refresh.
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            client_id=f"hookstream-subscriber-{group_id}",
        )
        self._uncommitted: dict[TopicPartition, int] = {}
        self._handed_out: tuple[TopicPartition, int] | None = None

    async def __aenter__(self) -> Subscriber:
        try:
            await self._consumer.start()
            topics = await self._consumer.topics()
        except KafkaError as exc:
            await self._consumer.stop()
            raise await start_failure(self.settings, exc) from exc
        if self.topic not in topics:
            await self._consumer.stop()
            raise missing_topic(self.topic, self.settings)
        self._consumer.subscribe([self.topic])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._handled()
                await self.commit()
        finally:
            await self._consumer.stop()

    def _handled(self) -> None:
        """The result handed out last is handled: its offset may be committed."""
        if self._handed_out is not None:
            tp, next_offset = self._handed_out
            self._uncommitted[tp] = next_offset
            self._handed_out = None

    async def commit(self) -> None:
        """Commit every result handed out and handled so far."""
        if self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            await self._consumer.commit(offsets)

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> AIResult:
        return parse_result(await self.next_record())

    async def next_record(self) -> ConsumerRecord[bytes, bytes]:
        """The next raw record, after committing the one before (the same rule)."""
        self._handled()
        await self.commit()
        record = await self._consumer.getone()
        self._handed_out = (TopicPartition(record.topic, record.partition), record.offset + 1)
        return record


def missing_topic(topic: str, settings: KafkaSettings) -> UnknownTopic:
    """The one line for a topic that does not exist: where, and the prefix in use."""
    prefix = settings.topic_prefix
    own = topic.startswith(f"{prefix}.")
    return UnknownTopic(
        topic,
        hint=f"on the broker at {settings.bootstrap_servers} (topic prefix {prefix!r}): "
        + (
            "check the prefix; hookstream's gateway creates its topics when it first starts"
            if own
            else f"check the name; hookstream's own topics are named {prefix}.<name>"
        ),
    )


def parse_result(record: ConsumerRecord[bytes, bytes]) -> AIResult:
    try:
        return AIResult.model_validate(orjson.loads(record.value or b""))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise ToolError(
            f"{record.topic}[{record.partition}]@{record.offset} is not an AI result: {exc}"
        ) from None


def parse_json_line(line: str, *, number: int, where: str) -> Mapping[str, Any]:
    """One JSON object per input line (``hookstream publish``); errors name the line."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ToolError(f"{where}:{number}: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ToolError(f"{where}:{number}: expected a JSON object")
    return value
