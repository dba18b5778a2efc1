"""A write to a topic that does not exist fails cleanly: one BrokerUnavailable, nothing left over.

Its deadline fires while aiokafka still waits for the topic's metadata, so the caller's waiter
is answered by the timer and never awaited; the writer must retrieve that answer itself, or
asyncio logs "Future exception was never retrieved" with a traceback the user never caused.
"""

from __future__ import annotations

import gc
import logging
import uuid

import pytest

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable
from streams.kafka.producer import KafkaWriter


async def test_a_write_to_a_missing_topic_leaves_no_unretrieved_exception(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap, produce_timeout_s=1.0)
    caplog.set_level(logging.ERROR, logger="asyncio")
    async with KafkaWriter(settings) as writer:
        with pytest.raises(BrokerUnavailable):
            await writer.send(f"missing-{uuid.uuid4().hex}", b"{}", key=b"k")
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
