"""Without a broker, the compacted-topic reader and topic creation fail with the one error a
user sees for it, naming what they could not reach."""

from __future__ import annotations

import socket

import pytest

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable
from streams.kafka.admin import create_topics
from streams.kafka.compacted import CompactedReader


def _closed_port() -> str:
    """An address nothing listens on: a port bound and released again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def test_the_reader_of_an_unreachable_broker_names_its_topic() -> None:
    reader = CompactedReader(
        KafkaSettings(bootstrap_servers=_closed_port()), "t.dedupe", lambda key, value: None
    )
    with pytest.raises(BrokerUnavailable, match=r"cannot read t\.dedupe"):
        await reader.start(load=True)
    with pytest.raises(RuntimeError, match="not started"):
        await reader.wait_for_position(0, 1)


async def test_creating_topics_on_an_unreachable_broker_names_the_address() -> None:
    address = _closed_port()
    with pytest.raises(BrokerUnavailable, match=f"cannot reach Kafka at {address}"):
        await create_topics(
            KafkaSettings(bootstrap_servers=address), {"t.events": {}}, partitions=1
        )
