"""The bare baselines of bench/pipeline/run.py, each run as its own process so that its CPU
time is its own (read by the benchmark from /proc/<pid>/stat).

``faust PREFIX BOOTSTRAP``: a Faust app with two pass-through agents, events → enriched →
results (raw bytes, awaited ``send`` per record as an agent usually writes), on asyncio's
default loop, as ``faust worker`` runs by default.
``faust-uvloop PREFIX BOOTSTRAP``: the same app on uvloop (``faust worker --loop uvloop``: the
policy set before the app exists, so that the consumer thread's loop is uvloop's too), as
hookstream's worker runs.
``aiokafka PREFIX BOOTSTRAP``: the same two hops as plain aiokafka consume → produce loops
(``getmany``, every record of a batch sent, the batch's acks awaited, the offsets committed).
``put PREFIX BOOTSTRAP CRM_URL``: the sink's floor: consume results, PUT each to the CRM (a
batch's PUTs concurrently), commit.
``faust-put PREFIX BOOTSTRAP CRM_URL``: the same PUTs from a bare Faust agent (64 concurrent
actors, Faust acking): what Faust's consume path adds to that floor, before any of hookstream's.

Every producer is ``acks=all`` and idempotent, as hookstream's are. Each runs until stopped.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

PARTITIONS = 8


def _faust(prefix: str, bootstrap: str, name: str) -> Any:
    import faust

    return faust.App(
        f"{prefix}-{name}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        topic_partitions=PARTITIONS,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        producer_acks=-1,
        datadir=str(Path(tempfile.gettempdir()) / f"hookstream-bench-{prefix}-{name}"),
    )


def _run_faust(app: Any) -> None:
    import faust

    sys.argv = [sys.argv[0], "worker"]
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def faust_app(prefix: str, bootstrap: str, *, uvloop: bool = False) -> None:
    if uvloop:
        import mode.loop

        mode.loop.use("uvloop")
    app = _faust(prefix, bootstrap, "bare-faust")
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    events = app.topic(f"{prefix}.events", key_type=bytes, value_type=bytes, **raw)
    enriched = app.topic(f"{prefix}.enriched", key_type=bytes, value_type=bytes, **raw)
    results = app.topic(f"{prefix}.results", key_type=bytes, value_type=bytes, **raw)

    async def enrich(stream: Any) -> None:
        async for event in stream.events():
            await enriched.send(key=event.key, value=event.value)

    async def ai(stream: Any) -> None:
        async for event in stream.events():
            await results.send(key=event.key, value=event.value)

    app.agent(events, name="bare.enrich")(enrich)
    app.agent(enriched, name="bare.ai")(ai)
    _run_faust(app)


def faust_put(prefix: str, bootstrap: str, crm_url: str) -> None:
    app = _faust(prefix, bootstrap, "bare-faust-put")
    results = app.topic(
        f"{prefix}.results",
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    sessions: list[aiohttp.ClientSession] = []

    async def put(stream: Any) -> None:
        if not sessions:
            sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)))
        async for event in stream.events():
            await _put(sessions[0], crm_url, event.value)

    app.agent(results, name="bare.put", concurrency=64)(put)
    _run_faust(app)


async def _put(session: aiohttp.ClientSession, crm_url: str, value: bytes) -> None:
    document = orjson.loads(value)
    customer = document["event"]["data"]["customer_id"]
    body = {"last_feedback_sentiment": document["output"]["sentiment"]}
    async with session.put(f"{crm_url}/customers/{customer}", json=body) as response:
        await response.read()


async def _hop(
    bootstrap: str, group: str, source: str, handle: Any, producer: AIOKafkaProducer | None
) -> None:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            if not batch:
                continue
            await asyncio.gather(*(handle(m) for msgs in batch.values() for m in msgs))
            await consumer.commit()
    finally:
        await consumer.stop()


async def aiokafka_loop(prefix: str, bootstrap: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()

    def forward(topic: str) -> Any:
        async def handle(message: Any) -> None:
            ack = await producer.send(topic, message.value, key=message.key)
            await ack

        return handle

    group = f"{prefix}-bare-aiokafka"
    await asyncio.gather(
        _hop(bootstrap, f"{group}-1", f"{prefix}.events", forward(f"{prefix}.enriched"), producer),
        _hop(bootstrap, f"{group}-2", f"{prefix}.enriched", forward(f"{prefix}.results"), producer),
    )


async def put_loop(prefix: str, bootstrap: str, crm_url: str) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def handle(message: Any) -> None:
            await _put(session, crm_url, message.value)

        await _hop(bootstrap, f"{prefix}-bare-put", f"{prefix}.results", handle, None)


def main() -> None:
    mode, prefix, bootstrap = sys.argv[1:4]
    if mode == "faust":
        faust_app(prefix, bootstrap)
    elif mode == "faust-uvloop":
        faust_app(prefix, bootstrap, uvloop=True)
    elif mode == "aiokafka":
        asyncio.run(aiokafka_loop(prefix, bootstrap))
    elif mode == "put":
        asyncio.run(put_loop(prefix, bootstrap, sys.argv[4]))
    elif mode == "faust-put":
        faust_put(prefix, bootstrap, sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
