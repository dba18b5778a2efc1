"""Enrichment from a Kafka table with real workers on the shared broker (issue 14, "Enrichment
from a Kafka table").

The flows file is the example's, its feedback flow's lookups replaced by one table lookup
(``account``: the key ``data.customer_id`` in a compacted topic of the test's own). What is held
here: a worker reads the table to its end before its first event (an update written before it
started is what the first event sees), a tombstone deletes a key, a value that is not JSON is
skipped and counted, a restarted worker reads the table again, and two workers both follow the
table and join their events with its latest values.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiokafka import AIOKafkaProducer

from schemas.events import EnrichedEvent
from streams.client import Publisher, make_event
from streams.kafka.admin import create_topics
from streams.kafka.connection import client_kwargs
from tests.support.ai_stack import metric, scrape
from tests.support.broker import free_port
from tests.support.kafka import delete_topics, read_all, settings_of, wait_for_records
from tests.support.sinkstack import wait_until
from tests.support.stack import EXAMPLE_CONFIG, Proc, Stack, running_stack

Row = tuple[str, dict[str, Any] | bytes | None]
FILLER: list[Row] = [(f"filler-{i}", {"plan": "free", "pad": "x" * 80}) for i in range(150_000)]


@asynccontextmanager
async def table_topic(bootstrap: str) -> AsyncIterator[str]:
    """A compacted topic of 3 partitions, named like a user's (no stack prefix)."""
    topic = f"crm-{uuid.uuid4().hex[:10]}.customers"
    await create_topics(
        settings_of(bootstrap), {topic: {"cleanup.policy": "compact"}}, partitions=3
    )
    try:
        yield topic
    finally:
        await delete_topics(bootstrap, [topic])


async def write_table(bootstrap: str, topic: str, rows: list[Row]) -> None:
    """Write rows in order (a dict: JSON, None: a tombstone, bytes: as they are), acked."""
    producer = AIOKafkaProducer(
        **client_kwargs(settings_of(bootstrap)),
        acks="all",
        enable_idempotence=True,  # keeps each partition's order across batches
        linger_ms=20,
    )
    await producer.start()
    try:
        for start in range(0, len(rows), 5000):
            for key, value in rows[start : start + 5000]:
                raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
                await producer.send(topic, raw, key=key.encode())
            await producer.flush()
    finally:
        await producer.stop()


def table_config(workdir: Path, topic: str, **table: Any) -> Path:
    """The example config with one lookup in ``topic``; ``table``: more of its settings."""
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    feedback = data["flows"][0]
    feedback["enrich"] = [
        {"name": "account", "table": {"topic": topic, "key": "{{ data.customer_id }}", **table}}
    ]
    feedback["sinks"] = []
    path = workdir / "flows-table.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def publish(stack: Stack, customers: list[str], run: str) -> dict[str, str]:
    """One helpdesk event per customer; returns event id -> customer."""
    ids: dict[str, str] = {}
    async with Publisher(bootstrap_servers=stack.bootstrap, topic_prefix=stack.prefix) as pub:
        for customer in customers:
            event = make_event(
                {"event": "ticket.created", "customer_id": customer, "message": f"hi {run}"},
                source="helpdesk",
                type="ticket.created",
                key=customer,
                id=f"table-{run}-{customer}",
            )
            await pub.publish_event(event)
            ids[event.id] = customer
    return ids


async def accounts(stack: Stack, ids: dict[str, str]) -> dict[str, Any]:
    """customer -> enrichment.account of each event in ``ids``, once all are enriched."""

    def mine(records: list[Any]) -> list[EnrichedEvent]:
        found = (EnrichedEvent.model_validate(r.json()) for r in records)
        return [e for e in found if e.event.id in ids]

    records = await wait_for_records(
        stack.bootstrap,
        stack.topic("enriched"),
        lambda rs: len(mine(rs)) >= len(ids),
        timeout_s=120,
        poll_s=0.3,
    )
    enriched = mine(records)
    assert len(enriched) == len(ids)  # one each
    return {ids[e.event.id]: e.enrichment["account"] for e in enriched}


async def test_a_worker_joins_with_the_whole_table_from_its_first_event_and_after_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with table_topic(kafka_bootstrap) as topic:
        await write_table(
            kafka_bootstrap,
            topic,
            [
                ("c1", {"plan": "free"}),
                ("c2", {"plan": "pro"}),
                ("c3", {"plan": "team"}),
                ("c4", b"{not json"),
                # Enough records that reading them takes a while: the updates below are at the
                # end of long partitions (without the load before the first event, the first
                # events are joined with the values above).
                *FILLER,
                ("c1", {"plan": "pro"}),  # an update...
                ("c2", None),  # ...and a tombstone, both before the worker starts
            ],
        )
        port = free_port()
        config = table_config(tmp_path, topic)
        env = {"HOOKSTREAM_METRICS_PORT": str(port)}
        async with running_stack(
            kafka_bootstrap, tmp_path, config_path=config, roles=("worker",), extra_env=env
        ) as stack:
            # Published the moment the worker is ready: the table it joins with is whole.
            ids = await publish(stack, ["c1", "c2", "c3", "c4", "c5"], "first")
            assert await accounts(stack, ids) == {
                "c1": {"plan": "pro"},
                "c2": None,  # deleted
                "c3": {"plan": "team"},
                "c4": None,  # its only value was not JSON: skipped
                "c5": None,  # never in the table
            }
            samples = await scrape(f"http://127.0.0.1:{port}/metrics")
            assert metric(samples, "hookstream_table_entries", topic=topic) == 2 + len(FILLER)
            assert (
                metric(samples, "hookstream_table_records_total", topic=topic, outcome="invalid")
                == 1
            )
            assert "not JSON" in stack.procs["worker"].log_text()

            worker = stack.procs["worker"]
            assert await worker.stop() == 0
            await write_table(
                kafka_bootstrap, topic, [("c1", {"plan": "enterprise"}), ("c3", None)]
            )
            await worker.start()
            ids = await publish(stack, ["c1", "c3"], "restarted")
            assert await accounts(stack, ids) == {"c1": {"plan": "enterprise"}, "c3": None}


async def test_two_workers_follow_the_table_and_join_with_its_latest_values(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    customers = [f"cus-{i}" for i in range(24)]
    async with table_topic(kafka_bootstrap) as topic:
        await write_table(kafka_bootstrap, topic, [(c, {"tier": "v1"}) for c in customers])
        ports = [free_port(), free_port()]
        config = table_config(tmp_path, topic)
        env = {"HOOKSTREAM_METRICS_PORT": str(ports[0])}
        async with running_stack(
            kafka_bootstrap, tmp_path, config_path=config, roles=("worker",), extra_env=env
        ) as stack:
            first = stack.procs["worker"]
            second = Proc(
                name="worker-2",
                args=first.args,
                env={
                    **stack.env,
                    "HOOKSTREAM_STATE_DIR": str(tmp_path / "state-2"),
                    "HOOKSTREAM_METRICS_PORT": str(ports[1]),
                },
                log_path=tmp_path / "worker-2.log",
            )
            stack.procs["worker-2"] = second
            await second.start()
            # Written while both run: each follows the topic. Wait until both have read it.
            await write_table(kafka_bootstrap, topic, [(c, {"tier": "v2"}) for c in customers])
            urls = [f"http://127.0.0.1:{p}/metrics" for p in ports]

            async def both_read_the_update() -> bool:
                for url in urls:
                    samples = await scrape(url)
                    upserts = metric(
                        samples, "hookstream_table_records_total", topic=topic, outcome="upsert"
                    )
                    if upserts < 2 * len(customers):
                        return False
                return True

            await wait_until(both_read_the_update, timeout_s=60)
            ids = await publish(stack, customers, "two")
            assert await accounts(stack, ids) == {c: {"tier": "v2"} for c in customers}
            # Both workers joined some of them: the events' partitions are shared.
            lookups = [
                metric(
                    await scrape(url),
                    "hookstream_lookup_seconds_count",
                    lookup="account",
                    outcome="ok",
                )
                for url in urls
            ]
            assert all(count > 0 for count in lookups), lookups
            assert sum(lookups) == len(customers)
            every = await read_all(stack.bootstrap, stack.topic("enriched"))
            assert len(every) == len(customers)


async def test_a_missing_table_topic_keeps_the_worker_unready_until_it_exists(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"crm-{uuid.uuid4().hex[:10]}.late"
    port = free_port()
    # 3 s, not the default 30 s, to take the topic as missing: each start of the agents waits
    # that long, and the test waits for one before it creates the topic.
    config = table_config(tmp_path, topic, partitions_timeout_s=3)
    env = {"HOOKSTREAM_METRICS_PORT": str(port)}
    async with running_stack(
        kafka_bootstrap, tmp_path, config_path=config, roles=("worker",), extra_env=env
    ) as stack:
        worker = stack.procs["worker"]
        expected = (
            f"table {topic} (flows[0].enrich[0].table): cannot load it: "
            "no partitions found in 3 s: does it exist?"
        )

        async def said_why() -> bool:
            return expected in worker.log_text()

        await wait_until(said_why, timeout_s=90)
        assert await readyz(port) == 503
        await create_topics(
            settings_of(kafka_bootstrap), {topic: {"cleanup.policy": "compact"}}, partitions=2
        )
        try:
            await write_table(kafka_bootstrap, topic, [("c1", {"plan": "late"})])

            async def ready() -> bool:
                return await readyz(port) == 200

            # Faust restarts the crashed agent; its next start finds the topic.
            await wait_until(ready, timeout_s=120)
            ids = await publish(stack, ["c1"], "late")
            assert await accounts(stack, ids) == {"c1": {"plan": "late"}}
        finally:
            await delete_topics(kafka_bootstrap, [topic])


async def readyz(port: int) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status
