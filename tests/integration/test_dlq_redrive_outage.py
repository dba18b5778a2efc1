"""A redrive through a broker outage writes each dead letter exactly once (issue 12).

``hookstream dlq redrive`` used to write with ``KafkaWriter.send``: when the broker stopped
answering, the write missed its deadline and the run failed, while the idempotent producer still
held the record and delivered it once the broker answered again. The run had not remembered it
as redriven, so the next run wrote it a second time. Now the redrive waits on that same write
and remembers the dead letter only once Kafka acknowledged it.

The outage is real: a private broker (scripts/kafka, own ports and state directory, so the
shared broker is untouched) is frozen with SIGSTOP just before the redrive writes its second
dead letter, and thawed with SIGCONT once a write has missed its 1 s deadline. Before the fix,
the first run failed with BrokerUnavailable and the operator's second run wrote the frozen
record again (two copies).
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

import streams.ops.dlq as dlq_module
from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable
from schemas.events import DeadLetter
from schemas.headers import REDRIVEN_HEADER
from schemas.topics import Topics
from streams.kafka.admin import create_topics
from streams.kafka.batch_writer import BatchingKafkaWriter
from streams.kafka.producer import KafkaWriter
from streams.ops.dlq import DeadLetters, DLQFilter
from tests.support.broker import private_broker
from tests.support.kafka import read_all

LETTERS = 20


async def put_dead_letters(settings: KafkaSettings, topics: Topics, target: str) -> None:
    now = datetime.now(UTC)
    async with KafkaWriter(settings) as writer:
        for n in range(LETTERS):
            letter = DeadLetter(
                stage="ai",
                error_class="InvalidModelOutput",
                error_message="not JSON",
                attempts=2,
                first_failure_at=now,
                last_failure_at=now,
                original_topic=target,
                original_partition=0,
                original_offset=n,
            )
            value = orjson.dumps({"event": {"id": f"redrive-{n}"}})
            await writer.send(
                topics.dlq, value, key=f"cus_{n % 4}".encode(), headers=letter.to_headers()
            )


async def test_a_redrive_through_an_outage_writes_each_dead_letter_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with private_broker(tmp_path / "broker") as broker:
        prefix = f"t-redrive-{uuid.uuid4().hex[:8]}"
        topics = Topics(prefix)
        target = topics.enriched
        settings = KafkaSettings(
            bootstrap_servers=broker.bootstrap, topic_prefix=prefix, produce_timeout_s=1.0
        )
        await create_topics(
            settings,
            {topics.dlq: {}, target: {}, topics.dlq_redriven: {"cleanup.policy": "compact"}},
            partitions=2,
            replication_factor=1,
        )
        await put_dead_letters(settings, topics, target)

        pid = broker.pid
        missed = asyncio.Event()
        frozen: list[bool] = []
        originals = 0

        class FreezingWriter(BatchingKafkaWriter):
            """The redrive's own writer; freezes the broker before the second dead letter's
            write, and reports the first write that then misses its deadline."""

            def _before(self, topic: str) -> None:
                nonlocal originals
                if topic == target:
                    originals += 1
                    if originals == 2 and not frozen:
                        os.kill(pid, signal.SIGSTOP)
                        frozen.append(True)

            async def write(self, topic: str, value: bytes, **kwargs: Any) -> Any:
                self._before(topic)
                return await super().write(topic, value, **kwargs)

            async def outcome(self, pending: Any, **kwargs: Any) -> Any:
                try:
                    return await super().outcome(pending, **kwargs)
                except BrokerUnavailable:
                    missed.set()
                    raise

            async def send(self, topic: str, value: bytes, **kwargs: Any) -> Any:
                self._before(topic)
                try:
                    return await super().send(topic, value, **kwargs)
                except BrokerUnavailable:
                    missed.set()
                    raise

        monkeypatch.setattr(dlq_module, "BatchingKafkaWriter", FreezingWriter)
        letters = DeadLetters(settings)
        first = asyncio.create_task(letters.redrive(DLQFilter()))
        try:
            await missed.wait()  # the broker is frozen, and a write missed its deadline
        finally:
            os.kill(pid, signal.SIGCONT)
        try:
            done, already = await first
        except BrokerUnavailable:  # before the fix; the operator runs it again:
            done, already = [], 0
        monkeypatch.setattr(dlq_module, "BatchingKafkaWriter", BatchingKafkaWriter)
        again, before = await letters.redrive(DLQFilter())

        copies = collections.Counter(
            r.headers[REDRIVEN_HEADER].decode() for r in await read_all(broker.bootstrap, target)
        )
        remembered = {r.key for r in await read_all(broker.bootstrap, topics.dlq_redriven) if r.key}
        assert frozen
        assert {k: n for k, n in copies.items() if n != 1} == {}
        assert len(copies) == LETTERS
        assert (len(done), already) == (LETTERS, 0)
        assert (len(again), before) == (0, LETTERS)
        assert len(remembered) == LETTERS
