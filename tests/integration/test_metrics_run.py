"""The worker's and the sink worker's ``/metrics`` after a small run on the real broker.

Real processes (gateway, worker, sinks with ``--metrics-port``), the AI and CRM simulators, the
example config. Each metric added for issue 13 is read back with a value only this run can
explain: 5 webhooks, 4 seeded or new customers and one without ``ticket_id``, then a CRM
outage (its PUTs answer 503) while 2 more arrive for one customer, then the CRM back. A
second test shows the lag series following the partitions when a second sink worker joins.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.broker import free_port
from tests.support.stack import Proc, Stack, running_stack

FLOW = "feedback-triage"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(session: aiohttp.ClientSession, url: str) -> Samples:
    """Every sample of ``url`` by (name, labels)."""
    async with session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def matching(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return {key: v for (n, key), v in samples.items() if n == name and wanted <= key}


async def until(
    session: aiohttp.ClientSession,
    url: str,
    condition: Callable[[Samples], bool],
    *,
    what: str,
    timeout_s: float = 90.0,
) -> Samples:
    """Scrape until ``condition`` holds (the run's sentinel), or fail with the last scrape."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        samples = await scrape(session, url)
        if condition(samples):
            return samples
        if loop.time() >= deadline:
            relevant = {k: v for k, v in samples.items() if k[0].startswith("hookstream_")}
            raise AssertionError(f"{what} not reached within {timeout_s} s: {relevant}")
        await asyncio.sleep(0.2)  # a scrape interval, not a wait for "nothing"


def feedback(customer: str, *, ticket: bool = True) -> dict[str, Any]:
    body = {"event": "ticket.created", "customer_id": customer, "message": "the app crashes"}
    if ticket:
        body["ticket_id"] = f"T-{uuid.uuid4().hex[:8]}"
    return body


async def start(stack: Stack, role: str, tmp_path: Path, *, name: str | None = None) -> str:
    """Start ``hookstream <role>`` with a metrics port; return its /metrics URL."""
    port = free_port()
    name = name or role
    args = [role, "-c", str(stack.config_path), "-l", "info", "--metrics-port", str(port)]
    proc = Proc(name=name, args=args, env=stack.env, log_path=tmp_path / f"{name}.log")
    stack.procs[name] = proc
    await proc.start()
    url = f"http://127.0.0.1:{port}/metrics"
    # Faust logs Ready before its app tasks run, and /metrics is served by one of them: the
    # port opens a moment after the mark Proc.start waits for.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    await response.read()
                    return url
            except aiohttp.ClientConnectorError:
                if loop.time() >= deadline:
                    raise
            await asyncio.sleep(0.1)


def lag(samples: Samples, group: str, topic: str) -> dict[str, float]:
    """Lag by partition of ``group`` on ``topic``."""
    found = matching(samples, "hookstream_consumer_lag_records", group=group, topic=topic)
    return {dict(labels)["partition"]: v for labels, v in found.items()}


async def test_worker_and_sinks_metrics_after_a_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    async with (
        running_stack(kafka_bootstrap, tmp_path, roles=("gateway",)) as stack,
        aiohttp.ClientSession() as session,
    ):
        worker_url = await start(stack, "worker", tmp_path)
        sinks_url = await start(stack, "sinks", tmp_path)
        new_customer = f"cus_new_{uuid.uuid4().hex[:6]}"
        bodies = [feedback(c) for c in ("cus_001", "cus_002", "cus_003", new_customer)]
        bodies.append(feedback("cus_004", ticket=False))  # the CRM sink's template needs it
        for body in bodies:
            status, answer, _ = await stack.post("helpdesk", body)
            assert status == 202, answer

        def deliveries(samples: Samples, outcome: str) -> float | None:
            name = "hookstream_sink_deliveries_total"
            return value(samples, name, flow=FLOW, sink="crm", outcome=outcome)

        sinks = await until(
            session,
            sinks_url,
            lambda s: deliveries(s, "delivered") == 4 and deliveries(s, "dead_lettered") == 1,
            what="4 delivered and 1 dead-lettered",
        )
        dead = matching(sinks, "hookstream_dead_letters_total")
        assert dead == {frozenset({("stage", "sink"), ("error_class", "TemplateError")}): 1.0}
        assert deliveries(sinks, "duplicate") == 0
        e2e = {"flow": FLOW, "sink": "crm"}
        assert value(sinks, "hookstream_end_to_end_seconds_count", **e2e) == 4
        e2e_sum_s = value(sinks, "hookstream_end_to_end_seconds_sum", **e2e)
        assert e2e_sum_s is not None
        assert e2e_sum_s > 0
        assert value(sinks, "hookstream_sink_delivery_seconds_count", **e2e) == 4
        assert value(sinks, "hookstream_sink_paused", **e2e) == 0
        assert value(sinks, "hookstream_sink_retries_total", **e2e) == 0

        worker_group = f"{stack.prefix}-worker"
        worker = await until(
            session,
            worker_url,
            lambda s: (
                sum(lag(s, worker_group, stack.topic("enriched")).values()) == 0
                and len(lag(s, worker_group, stack.topic("enriched"))) == 8
            ),
            what="the worker's lag on the enriched topic back to 0",
        )
        # Every partition of both topics the worker reads, none of another group or topic.
        assert sorted(lag(worker, worker_group, stack.topic("events")), key=int) == [
            str(p) for p in range(8)
        ]
        assert not matching(worker, "hookstream_dead_letters_total")
        lookups = {"flow": FLOW, "lookup": "customer"}
        seconds = "hookstream_lookup_seconds_count"
        assert value(worker, seconds, **lookups, outcome="ok") == 4
        assert value(worker, seconds, **lookups, outcome="not_found") == 1
        assert value(worker, seconds, **lookups, outcome="error") is None
        events = "hookstream_runner_events_total"
        assert value(worker, events, agent="hookstream.enrich") == 5
        assert value(worker, events, agent="hookstream.ai") == 5

        # The CRM's writes fail: the sink pauses, its two results stay uncommitted (lag 2).
        await stack.crm.configure(fail_status=503, fail_methods=["PUT"])
        for _ in range(2):
            status, answer, _ = await stack.post("helpdesk", feedback("cus_005"))
            assert status == 202, answer
        sinks_group = f"{stack.prefix}-sinks"
        results = stack.topic("results")
        sinks = await until(
            session,
            sinks_url,
            lambda s: (
                value(s, "hookstream_sink_paused", **e2e) == 1
                and sum(lag(s, sinks_group, results).values()) == 2
            ),
            what="the CRM sink paused with 2 results behind it",
        )
        behind = {p: n for p, n in lag(sinks, sinks_group, results).items() if n}
        assert list(behind.values()) == [2], behind  # one customer: one partition
        pauses = matching(sinks, "hookstream_sink_pauses_total", **e2e)
        assert pauses == {frozenset({*e2e.items(), ("cause", "RetriableRemoteError")}): 1.0}, pauses

        await stack.crm.configure(fail_status=None)
        sinks = await until(
            session,
            sinks_url,
            lambda s: (
                deliveries(s, "delivered") == 6 and sum(lag(s, sinks_group, results).values()) == 0
            ),
            what="6 delivered and the sinks' lag back to 0",
        )
        assert value(sinks, "hookstream_sink_paused", **e2e) == 0
        retries = value(sinks, "hookstream_sink_retries_total", **e2e)
        assert retries is not None
        assert retries >= 1
        assert value(sinks, "hookstream_end_to_end_seconds_count", **e2e) == 6
        # The paused results waited for the outage: their end-to-end time is in the sum.
        later_sum_s = value(sinks, "hookstream_end_to_end_seconds_sum", **e2e)
        assert later_sum_s is not None
        assert later_sum_s > e2e_sum_s


async def test_lag_moves_with_the_partitions_at_a_rebalance(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A second sink worker joins: afterwards each results partition is reported by exactly
    one of the two (the first dropped the series of the partitions it gave away), and the
    lag of a result held by a paused sink is reported by the process that holds it."""
    async with (
        running_stack(kafka_bootstrap, tmp_path, roles=("gateway",)) as stack,
        aiohttp.ClientSession() as session,
    ):
        group, results = f"{stack.prefix}-sinks", stack.topic("results")
        first = await start(stack, "sinks", tmp_path)
        await until(
            session,
            first,
            lambda s: len(lag(s, group, results)) == 8,
            what="the first sink worker reporting all 8 partitions",
        )
        second = await start(stack, "sinks", tmp_path, name="sinks-2")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while True:  # until the rebalance has settled: each partition in one process
            mine = set(lag(await scrape(session, first), group, results))
            theirs = set(lag(await scrape(session, second), group, results))
            if mine and theirs and not mine & theirs and len(mine | theirs) == 8:
                break
            assert loop.time() < deadline, (sorted(mine), sorted(theirs))
            await asyncio.sleep(0.2)

        await start(stack, "worker", tmp_path)  # makes the result the sinks will hold
        await stack.crm.configure(fail_status=503, fail_methods=["PUT"])
        status, answer, _ = await stack.post("helpdesk", feedback("cus_006"))
        assert status == 202, answer

        def held(samples: Samples) -> dict[str, float]:
            return {p: n for p, n in lag(samples, group, results).items() if n}

        deadline = loop.time() + 90
        while True:  # the process owning the result's partition reports its lag of 1
            behind = [held(await scrape(session, url)) for url in (first, second)]
            if sorted(len(b) for b in behind) == [0, 1]:
                break
            assert loop.time() < deadline, behind
            await asyncio.sleep(0.2)
        owner = 0 if behind[0] else 1
        partition = next(iter(behind[owner]))
        assert behind[owner] == {partition: 1}
        assert partition in (mine, theirs)[owner]

        # The CRM back: the owner delivers it and its lag returns to 0 (and it stops at once).
        await stack.crm.configure(fail_status=None)
        await until(
            session,
            (first, second)[owner],
            lambda s: lag(s, group, results).get(partition) == 0,
            what="the held result delivered and committed",
        )
