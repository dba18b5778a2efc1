"""``hookstream trace`` against a running stack: gateway, worker, sink worker, AI and CRM
simulators as real processes on the real broker. A webhook is posted, delivered to the CRM, and
traced by the command (a subprocess): every hop, in order, with the right ids; a dead-lettered
event, redriven after the fix, shows the dead letter, the redrive and what came after; an
unknown id exits 6 with the one line saying what was searched.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from streams.cli.exits import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_UNAVAILABLE
from streams.ops.trace import partition_for
from tests.support.broker import free_port
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.sinkstack import run_cli
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
PARTITIONS = 8  # examples/flows.yaml's kafka.partitions


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("trace")
    async with running_stack(kafka_bootstrap, workdir) as running:
        yield running


def _ticket(customer: str) -> dict[str, Any]:
    return {
        "event": "ticket.created",
        "ticket_id": f"T-{uuid.uuid4().hex[:8]}",
        "customer_id": customer,
        "message": f"The export is broken again ({uuid.uuid4().hex[:6]}); I want a refund.",
    }


def _receipt_for(event_id: str) -> Any:
    def found(records: list[Record]) -> bool:
        return any(r.json()["event_key"] == f"helpdesk/{event_id}" for r in records)

    return found


async def _post_and_deliver(stack: Stack, customer: str) -> str:
    event_id = f"trace-{uuid.uuid4().hex[:12]}"
    status, _, _ = await stack.post("helpdesk", _ticket(customer), webhook_id=event_id)
    assert status == 202
    await wait_for_records(
        stack.bootstrap, stack.topic("receipts"), _receipt_for(event_id), timeout_s=120
    )
    return event_id


async def _trace(stack: Stack, *args: str) -> tuple[int, str, str]:
    return await run_cli("trace", "-c", str(stack.config_path), *args, env=stack.env)


def _about(records: list[Record], event_id: str) -> list[Record]:
    def names(record: Record) -> bool:
        value = record.json()
        event = value.get("event", value)
        return bool(event.get("id") == event_id or value.get("event_key") == f"helpdesk/{event_id}")

    return [r for r in records if names(r)]


async def test_a_delivered_webhook_shows_every_hop_in_order(stack: Stack) -> None:
    event_id = await _post_and_deliver(stack, "cus_002")
    code, out, err = await _trace(stack, event_id, "--json")
    assert code == 0, err
    journey = orjson.loads(out)
    hops = journey["hops"]
    assert [h["kind"] for h in hops] == ["event", "enriched", "result", "receipt"]
    assert [h["topic"] for h in hops] == [
        stack.topic(role) for role in ("events", "enriched", "results", "receipts")
    ]
    assert journey["source"] == "helpdesk"
    assert journey["key"] == "cus_002"
    # Each hop is the very record on its topic: same partition and offset.
    for hop in hops:
        records = _about(await read_all(stack.bootstrap, hop["topic"]), event_id)
        assert [(r.partition, r.offset) for r in records] == [(hop["partition"], hop["offset"])]
        assert records[0].timestamp_ms == hop["timestamp_ms"]
    # The key's partition, as the producer chose it: the search read only that one elsewhere.
    assert {h["partition"] for h in hops} == {partition_for("cus_002", PARTITIONS)}
    searched = {s["topic"]: s["partitions"] for s in journey["searched"]}
    assert searched[stack.topic("events")] == list(range(PARTITIONS))
    for role in ("enriched", "results", "dlq", "receipts"):
        assert searched[stack.topic(role)] == [partition_for("cus_002", PARTITIONS)]
    result = hops[2]["value"]
    assert result["event"]["id"] == event_id
    assert result["model"] == "sim-1"
    usage = result["usage"]
    tokens = f"{usage['prompt_tokens']}+{usage['completion_tokens']} tok"
    assert tokens in hops[2]["summary"]
    assert f"${result['cost_usd']:.4f}" in hops[2]["summary"]
    assert hops[3]["value"]["sink"] == "crm"
    assert hops[3]["value"]["status"] == 200
    assert hops[0]["latency_ms"] is None
    assert all(h["latency_ms"] >= 0 for h in hops[1:])
    assert journey["total_ms"] == hops[-1]["timestamp_ms"] - hops[0]["timestamp_ms"]

    # The text: one line per hop, in the same order, with its coordinates and summary.
    code, out, err = await _trace(stack, event_id)
    assert code == 0, err
    lines = out.splitlines()
    trace_id = hops[0]["value"]["traceid"]
    assert journey["trace_id"] == trace_id
    assert lines[0].startswith(
        f"event helpdesk/{event_id}  key cus_002  trace {trace_id}  4 hops in "
    )
    for line, hop in zip(lines[1:5], hops, strict=True):
        assert line.startswith(hop["time"])
        where = f"{hop['topic']}[{hop['partition']}]@{hop['offset']}"
        assert re.search(rf" {re.escape(where)} +{hop['kind']} ", line), line
        assert line.endswith(f"  {hop['summary']}")
    assert lines[5].startswith("searched since ")

    # --source with --webhook-id, and --key (then one partition of the events topic too).
    code, out, err = await _trace(
        stack, "--source", "helpdesk", "--webhook-id", event_id, "--key", "cus_002", "--json"
    )
    assert code == 0, err
    keyed = orjson.loads(out)
    assert [h["offset"] for h in keyed["hops"]] == [h["offset"] for h in hops]
    assert {s["topic"]: s["partitions"] for s in keyed["searched"]}[stack.topic("events")] == [
        partition_for("cus_002", PARTITIONS)
    ]


async def test_a_dead_letter_and_its_redrive_are_both_in_the_journey(stack: Stack) -> None:
    await stack.ai.configure(rate_malformed=1.0)
    event_id = f"trace-dlq-{uuid.uuid4().hex[:12]}"
    try:
        status, _, _ = await stack.post("helpdesk", _ticket("cus_004"), webhook_id=event_id)
        assert status == 202
        await wait_for_records(
            stack.bootstrap,
            stack.topic("dlq"),
            lambda rs: bool(_about(rs, event_id)),
            timeout_s=120,
        )
    finally:
        await stack.ai.configure(rate_malformed=0.0)
    config = ("-c", str(stack.config_path))
    code, out, err = await run_cli("dlq", "redrive", *config, "--stage", "ai", env=stack.env)
    assert code == 0, err
    await wait_for_records(
        stack.bootstrap, stack.topic("receipts"), _receipt_for(event_id), timeout_s=120
    )

    code, out, err = await _trace(stack, event_id, "--json")
    assert code == 0, err
    hops = orjson.loads(out)["hops"]
    assert [h["kind"] for h in hops] == [
        "event",
        "enriched",
        "dead_letter",
        "redriven",
        "result",
        "receipt",
    ]
    letter, redriven = hops[2], hops[3]
    assert letter["topic"] == stack.topic("dlq")
    assert letter["headers"]["hookstream-dlq-stage"] == "ai"
    assert letter["value"]["event"]["id"] == event_id
    assert letter["summary"].startswith("ai  flow feedback-triage  ")
    # The redrive: the enriched record written back, naming the dead letter it came from.
    assert redriven["topic"] == stack.topic("enriched")
    assert redriven["headers"]["hookstream-redriven"] == f"{letter['partition']}:{letter['offset']}"
    assert redriven["summary"].startswith(f"from dlq {letter['partition']}:{letter['offset']}: ")
    assert hops[4]["value"]["event"]["id"] == event_id

    code, out, err = await _trace(stack, event_id)
    assert code == 0, err
    assert "dead_letter" in out
    assert "redriven" in out


async def test_a_sink_dead_letter_redriven_to_the_results_topic(stack: Stack) -> None:
    # No ticket_id: the CRM sink's template fails (examples/flows.yaml), the result is
    # dead-lettered by the sink stage, and its redrive fails the same way.
    event_id = f"trace-sink-{uuid.uuid4().hex[:12]}"
    ticket = {k: v for k, v in _ticket("cus_005").items() if k != "ticket_id"}
    status, _, _ = await stack.post("helpdesk", ticket, webhook_id=event_id)
    assert status == 202

    def letters(count: int) -> Any:
        return lambda rs: len(_about(rs, event_id)) >= count

    await wait_for_records(stack.bootstrap, stack.topic("dlq"), letters(1), timeout_s=120)
    config = ("-c", str(stack.config_path))
    code, out, err = await run_cli("dlq", "redrive", *config, "--stage", "sink", env=stack.env)
    assert code == 0, err
    await wait_for_records(stack.bootstrap, stack.topic("dlq"), letters(2), timeout_s=120)

    code, out, err = await _trace(stack, event_id, "--json")
    assert code == 0, err
    hops = orjson.loads(out)["hops"]
    kinds = ["event", "enriched", "result", "dead_letter", "redriven", "dead_letter"]
    assert [h["kind"] for h in hops] == kinds
    first, redriven = hops[3], hops[4]
    assert first["summary"].startswith("sink  flow feedback-triage sink crm  TemplateError: ")
    assert "data.ticket_id" in first["summary"]
    assert redriven["topic"] == stack.topic("results")
    assert redriven["summary"].startswith(
        f"from dlq {first['partition']}:{first['offset']}: result  feedback-triage  sim-1  "
    )
    assert hops[5]["headers"]["hookstream-dlq-original_offset"] == str(redriven["offset"])


async def test_a_replay_shows_its_copy_and_what_the_stages_made_of_it(stack: Stack) -> None:
    event_id = await _post_and_deliver(stack, "cus_003")
    events = _about(await read_all(stack.bootstrap, stack.topic("events")), event_id)
    stamp_ms = events[0].timestamp_ms
    # The window [its timestamp, +1 ms): this event alone.
    start, end = (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
        for ms in (stamp_ms, stamp_ms + 1)
    )
    config = ("-c", str(stack.config_path))
    code, out, err = await run_cli(
        "replay", *config, "--topic", "events", "--from", start, "--to", end, "--yes",
        "--no-progress", env=stack.env,
    )  # fmt: skip
    assert code == 0, err
    replay_id = out.split()[1].rstrip(":")

    def replayed_result(records: list[Record]) -> bool:
        return any(r.headers.get("hookstream-replay") == replay_id.encode() for r in records)

    def replayed_receipt(records: list[Record]) -> bool:
        suffix = f"/replay/{replay_id}"
        return any(r.json()["idempotency_key"].endswith(suffix) for r in records)

    await wait_for_records(stack.bootstrap, stack.topic("results"), replayed_result)
    # The example's CRM sink delivers replays (deliver_replays defaults to true for HTTP).
    await wait_for_records(stack.bootstrap, stack.topic("receipts"), replayed_receipt)

    code, out, err = await _trace(stack, event_id, "--json")
    assert code == 0, err
    hops = orjson.loads(out)["hops"]
    kinds = ["event", "enriched", "result", "receipt", "replayed", "enriched", "result", "receipt"]
    assert [h["kind"] for h in hops] == kinds
    assert [h["replay"] for h in hops] == [None] * 4 + [replay_id] * 4
    copy = hops[4]
    assert copy["topic"] == stack.topic("events")
    assert copy["summary"] == f"replay {replay_id}: {hops[0]['summary']}"
    assert hops[5]["summary"].endswith(f"  (replay {replay_id})")
    assert hops[7]["summary"] == f"{hops[3]['summary']}  (replay {replay_id})"


async def test_an_unknown_id_exits_not_found_saying_what_was_searched(stack: Stack) -> None:
    missing = f"never-{uuid.uuid4().hex[:8]}"
    code, out, err = await _trace(stack, missing, "--since", "1h")
    assert code == EXIT_NOT_FOUND
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"hookstream: no record of event {missing} — searched since ")
    for role in ("events", "enriched", "results", "dlq", "receipts"):
        assert stack.topic(role) in lines[0]


async def test_an_unreachable_broker_exits_3(stack: Stack) -> None:
    env = {**stack.env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    code, out, err = await run_cli("trace", "-c", str(stack.config_path), "any-id", env=env)
    assert code == EXIT_UNAVAILABLE
    assert out == ""
    assert err.startswith("hookstream: cannot read the ")
    assert "check that Kafka runs at 127.0.0.1:" in err
    assert err.count("\n") == 1


async def test_an_id_two_sources_used_needs_source(stack: Stack) -> None:
    event_id = await _post_and_deliver(stack, "cus_001")
    payment = {
        "id": event_id,  # the payments source takes the id from the body
        "type": "payment.failed",
        "data": {"customer": "cus_001", "amount": 4200, "description": "Card declined."},
    }
    status, _, _ = await stack.post("payments", payment)
    assert status == 202
    # The payments flow's result: by then the payments event is on the events topic too.
    await wait_for_records(
        stack.bootstrap,
        stack.topic("results"),
        lambda rs: any(r.json()["flow"] == "payment-followup" for r in _about(rs, event_id)),
        timeout_s=120,
    )
    code, out, err = await _trace(stack, event_id)
    assert code == EXIT_BAD_INPUT
    assert err == (
        f"hookstream: event id {event_id!r} was received from several sources "
        "(helpdesk, payments): give --source\n"
    )
    code, out, err = await _trace(stack, event_id, "--source", "payments", "--json")
    assert code == 0, err
    journey = orjson.loads(out)
    assert journey["source"] == "payments"
    assert journey["hops"][0]["value"]["source"] == "payments"
    kinds = [h["kind"] for h in journey["hops"]]
    assert kinds[:3] == ["event", "enriched", "result"]
    assert all("payment-followup" in h["summary"] for h in journey["hops"][1:])
