"""The AI stage on its own, for integration tests and the benchmark: a worker process on the
real broker, fed by records produced straight to the enriched topic (no gateway needed).

``AI_CONFIG`` is a flows file with two providers on the same AI simulator: ``primary``
(OpenAI-compatible, model ``sim-1``) and ``backup`` (Anthropic Messages, model ``sim-claude``),
and one flow ``triage`` that falls back from the first to the second.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from schemas.codec import dumps
from schemas.events import CloudEvent, EnrichedEvent
from streams.kafka.connection import client_kwargs
from tests.support.kafka import Kafka, settings_of

AI_CONFIG = """
version: 1
kafka:
  bootstrap_servers: ${KAFKA_BOOTSTRAP_SERVERS}
  topic_prefix: ${HOOKSTREAM_TOPIC_PREFIX}
  partitions: ${HOOKSTREAM_TEST_PARTITIONS:-4}
worker:
  retry_backoff_s: 0.05
  retry_backoff_max_s: 2
  commit_interval_s: 0.5
sources:
  - name: helpdesk
    signature: {scheme: none}
    id_field: id
    type_field: event
    partition_key: customer_id
providers:
  - name: primary
    kind: openai
    base_url: ${HOOKSTREAM_AI_BASE_URL}
    model: sim-1
    timeout_s: 10
    breaker: {failure_threshold: 5, open_s: 60}
    prices:
      sim-1: {input_usd_per_mtok: 150, output_usd_per_mtok: 600}
  - name: backup
    kind: anthropic
    base_url: ${HOOKSTREAM_AI_BASE_URL}
    model: sim-claude
    timeout_s: 10
    prices:
      sim-claude: {input_usd_per_mtok: 300, output_usd_per_mtok: 1500}
flows:
  - name: triage
    match: {source: helpdesk, types: ["ticket.*"]}
    ai:
      provider: primary
      fallbacks: [{provider: backup}]
      prompt: "{{ data.message }}"
      output:
        type: object
        properties:
          sentiment: {type: string, enum: [positive, neutral, negative]}
          summary: {type: string}
        required: [sentiment, summary]
      max_concurrency: ${HOOKSTREAM_TEST_N:-8}
      max_attempts: 3
"""


def write_config(
    directory: Path, *, responses: str | None = None, session_timeout_s: float | None = None
) -> Path:
    """``responses``: the primary provider calls OpenAI's Responses API, ``"background"`` in
    background mode (polled every 50 ms at first), ``"sync"`` without it.
    ``session_timeout_s``: the worker's (default 10 s); a worker killed -9 and started again
    joins its group once its killed self's session expired, so tests that do that set 6 s,
    the least brokers accept."""
    text = AI_CONFIG
    if session_timeout_s is not None:
        text = text.replace("worker:\n", f"worker:\n  session_timeout_s: {session_timeout_s}\n", 1)
    if responses is not None:
        options = "    api: responses\n"
        if responses == "background":
            options += "    background: true\n    background_poll_s: 0.05\n"
            options += "    background_poll_max_s: 0.5\n"
        text = text.replace("    model: sim-1\n", "    model: sim-1\n" + options, 1)
    path = directory / "ai-flows.yaml"
    path.write_text(text)
    return path


class MemoryMap:
    """A stand-in for the durable map where background response ids are recorded (tests that
    are about the provider protocol, not Kafka)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any | None:
        return self.data.get(key)

    async def put(self, writer: Any, key: str, value: Any) -> None:
        self.data[key] = value


def enriched(customer: str, message: str, *, event_id: str | None = None) -> EnrichedEvent:
    event = CloudEvent(
        id=event_id or f"ev-{uuid.uuid4().hex}",
        source="helpdesk",
        type="ticket.created",
        time=datetime.now(UTC),
        data={"customer_id": customer, "message": message},
        partitionkey=customer,
        traceid=uuid.uuid4().hex,
    )
    return EnrichedEvent(flow="triage", event=event)


async def produce(bootstrap: Kafka, topic: str, records: list[EnrichedEvent]) -> None:
    """Write enriched records in big batches (send without waiting, then flush)."""
    producer = AIOKafkaProducer(
        **client_kwargs(settings_of(bootstrap)), acks="all", enable_idempotence=True, linger_ms=20
    )
    await producer.start()
    try:
        for start in range(0, len(records), 5000):
            for record in records[start : start + 5000]:
                await producer.send(topic, dumps(record), key=record.event.partitionkey.encode())
            await producer.flush()
    finally:
        await producer.stop()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([-+0-9.eEinfNa]+)$")


async def scrape(url: str) -> dict[str, float]:
    """``/metrics`` as {'name{labels}': value}."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def metric(samples: dict[str, Any], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total
