"""A second sink worker joins while the first is delivering: each result once, in key order.

The sink worker runs on its own aiokafka consumer (agents/sinks/consumer.py): at the
rebalance the first worker waits for its deliveries in flight and commits what is done before
its partitions move, so the second starts where the first stopped. Real processes, the real
broker, the CRM simulator holding each request 1 s so that deliveries are in flight when the
group rebalances (the new owner, had it not waited for them, would send them again: with a
rebalance that does not wait, this test fails on the CRM's idempotent replays).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from schemas.codec import dumps
from schemas.events import AIResult, CloudEvent
from tests.support.broker import free_port
from tests.support.sinkstack import wait_until
from tests.support.stack import Proc, Stack, running_stack

RESULTS = 400
CUSTOMERS = 50
FLOW = "feedback-triage"


async def write_results(stack: Stack) -> dict[str, list[str]]:
    """RESULTS results of the example's feedback flow; returns the event ids per customer,
    in the order written (each customer's results share a key: one partition)."""
    by_customer: dict[str, list[str]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=10)
    await producer.start()
    try:
        for index in range(RESULTS):
            customer = f"cus_r{index % CUSTOMERS:03d}"
            event = CloudEvent(
                id=f"rb-{uuid.uuid4().hex[:12]}",
                source="helpdesk",
                type="ticket.created",
                time=datetime.now(UTC),
                data={"customer_id": customer, "ticket_id": f"T-{index}", "message": "slow"},
                partitionkey=customer,
            )
            result = AIResult(
                flow=FLOW,
                event=event,
                provider="sim",
                model="sim-1",
                output={"sentiment": "negative", "category": "bug", "summary": f"#{index}"},
                latency_ms=1.0,
                attempts=1,
            )
            await producer.send(stack.topic("results"), dumps(result), key=customer.encode())
            by_customer.setdefault(customer, []).append(event.id)
        await producer.flush()
    finally:
        await producer.stop()
    return by_customer


async def delivered(session: aiohttp.ClientSession, port: int) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "hookstream_sink_deliveries_total"
        and sample.labels.get("outcome") == "delivered"
    )


async def start_sinks(stack: Stack, tmp_path: Path, name: str) -> int:
    port = free_port()
    args = ["sinks", "-c", str(stack.config_path), "-l", "info", "--metrics-port", str(port)]
    proc = Proc(name=name, args=args, env=stack.env, log_path=tmp_path / f"{name}.log")
    stack.procs[name] = proc
    await proc.start()
    return port


async def test_a_worker_joining_under_load_delivers_each_result_once_in_key_order(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with (
        running_stack(kafka_bootstrap, tmp_path, roles=("gateway",)) as stack,
        aiohttp.ClientSession() as session,
    ):
        crm = stack.crm
        await crm.configure(latency_ms=1000)
        by_customer = await write_results(stack)
        first = await start_sinks(stack, tmp_path, "sinks")

        async def under_way() -> bool:
            return len(await crm.updates()) >= RESULTS // 10

        await wait_until(under_way, timeout_s=120)
        second = await start_sinks(stack, tmp_path, "sinks-2")

        async def all_applied() -> list[dict[str, Any]]:
            updates = await crm.updates()
            return updates if len(updates) >= RESULTS else []

        updates = await wait_until(all_applied, timeout_s=300)
        stats = await crm.stats()
        counts = [await delivered(session, port) for port in (first, second)]
        logs = {name: proc.log_text() for name, proc in stack.procs.items()}

    # Each result sent once: one update per key, and no request repeated a key.
    keys = [u["idempotency_key"] for u in updates]
    assert len(keys) == len(set(keys)) == RESULTS
    assert stats["idempotent_replays"] == 0
    # Both workers delivered, and together exactly the results written.
    assert sum(counts) == RESULTS, counts
    assert min(counts) > 0, counts
    assert "partitions revoked" in logs["sinks"]
    # Per customer, in the order written, across the move of its partition.
    for customer, ids in by_customer.items():
        order = [
            u["idempotency_key"].split("/")[1] for u in updates if u["customer_id"] == customer
        ]
        assert order == ids, customer
