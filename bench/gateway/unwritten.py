"""The gateway with a Kafka writer that acknowledges every record at once: benchmark only.

Reference (e) of bench/gateway/run.py: everything the gateway does for a webhook (HTTP,
limits, verification, the CloudEvent, the 202 with its offset) except the Kafka write. Its
CPU per request beside the bare aiohttp handler's (a) says what is left for the write if the
gateway is to cost no more than (a) (issue 16). Nothing is written anywhere: never run it as a
gateway.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aiokafka.structs import RecordMetadata, TopicPartition

from streams.cli.main import main
from streams.kafka import batch_writer

_ACK = RecordMetadata("unwritten", 0, TopicPartition("unwritten", 0), 0, 0, -1, 0)


def _submit(self: Any, topic: str, value: bytes, **_: Any) -> asyncio.Future[RecordMetadata]:
    ack: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
    ack.set_result(_ACK)
    return ack


async def _nothing(self: Any) -> None:
    return None


batch_writer.BatchingKafkaWriter.submit = _submit  # type: ignore[method-assign]
batch_writer.BatchingKafkaWriter.start = _nothing  # type: ignore[method-assign]
batch_writer.BatchingKafkaWriter.stop = _nothing  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv[0] = "hookstream"
    raise SystemExit(main())
