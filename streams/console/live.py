"""The live results view: ``GET /live/stream`` is a Server-Sent Events stream of new results.

Each open page gets its own consumer without a group, assigned every partition of
``<prefix>.results`` at its end: it commits nothing, joins no group (no rebalance of anyone's,
no group left behind on the broker) and sees each result written after it started, whichever
worker wrote it. Once positioned it sends a ``ready`` event, so a page (or a test) knows that
what is produced from then on will be shown. Each result is one ``result`` event whose data is
a JSON object the page renders as text (``textContent``), never as markup.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from schemas.config import KafkaSettings
from schemas.errors import BrokerUnavailable, ToolError
from schemas.topics import Topics
from streams.client import parse_result
from streams.console.security import SECURITY_HEADERS
from streams.kafka.reader import new_consumer, partitions_of

log = logging.getLogger(__name__)
KEEPALIVE_S = 15.0


def _row(record: Any) -> dict[str, Any]:
    """What the page shows of one result."""
    try:
        result = parse_result(record)
    except ToolError as exc:
        return {"where": f"{record.partition}:{record.offset}", "error": str(exc)}
    redriven = any(name == "hookstream-redriven" for name, _ in record.headers)
    return {
        "where": f"{record.partition}:{record.offset}",
        "time": result.produced_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        "flow": result.flow,
        "event_id": result.event.id,
        "key": result.event.partitionkey,
        "model": result.model,
        "latency_ms": round(result.latency_ms, 1),
        "cost_usd": result.cost_usd,
        "output": orjson.dumps(result.output).decode(),
        "redriven": redriven,
    }


def _event(name: str, data: object) -> bytes:
    return f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


async def stream(request: web.Request, settings: KafkaSettings) -> web.StreamResponse:
    # Sent before the middleware sees the response: its headers go with the first byte.
    headers = {**SECURITY_HEADERS, "Content-Type": "text/event-stream"}
    response = web.StreamResponse(headers=headers)
    topic = Topics(settings.topic_prefix).results
    consumer = new_consumer(settings)
    try:
        try:
            await consumer.start()
            tps: list[TopicPartition] = await partitions_of(consumer, topic)
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:  # fix the positions now: later results are the live ones
                await consumer.position(tp)
        except KafkaError as exc:  # before the answer starts: a page that says so
            raise BrokerUnavailable(f"cannot read {topic}: {exc}") from exc
        await response.prepare(request)
        await response.write(_event("ready", {"topic": topic, "partitions": len(tps)}))
        while True:
            batches = await consumer.getmany(timeout_ms=int(KEEPALIVE_S * 1000), max_records=100)
            records = sorted(
                (r for batch in batches.values() for r in batch), key=lambda r: r.timestamp
            )
            for record in records:
                await response.write(_event("result", _row(record)))
            if not records:
                await response.write(b": keepalive\n\n")
    except (ConnectionResetError, KafkaError) as exc:  # the page went, or Kafka mid-stream
        log.info("live results stream ended: %s", exc)
    finally:
        await consumer.stop()
    return response
