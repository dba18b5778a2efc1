"""One webhook, one trace: spans from the gateway, the worker and the sink worker, received by an
in-process OTLP/HTTP receiver, form one tree under the sender's span; the trace context rides
every record header and every outgoing request; and without spans it still travels (DLQ,
redrive, replay included).

The processes are the real ``hookstream`` services on the real broker (tests/support/stack.py)
with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at the receiver (tests/support/otlp.py) and a
100 ms export delay; the test waits until the sink's delivery span has arrived, then checks the
whole tree, the GenAI attributes of the model call against the result the simulator's answer
made, and the ``traceparent`` the CRM simulator received.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

from schemas.tracecontext import parse_traceparent
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.otlp import ReceivedSpan, running_otlp_receiver
from tests.support.sinkstack import run_cli
from tests.support.stack import running_stack

TICKET = {
    "event": "ticket.created",
    "ticket_id": "T-77",
    "message": "The invoice export is broken since Monday.",
}


def _ids() -> tuple[str, str]:
    rng = random.Random()  # noqa: S311 - test ids
    return f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64) or 1:016x}"


def _by_name(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [(s.service, s.name) for s in spans])
    return found[0]


def _trace_of(record: Record) -> str:
    context = parse_traceparent(record.headers.get("traceparent"))
    assert context is not None, (record.topic, record.headers)
    return context.trace_id


async def test_one_webhook_is_one_tree_of_spans_across_the_three_services(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with running_otlp_receiver() as (receiver, endpoint):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        async with running_stack(kafka_bootstrap, tmp_path, extra_env=env) as stack:
            trace_id, sender_span = _ids()
            customer = f"cus_trace_{uuid.uuid4().hex[:8]}"
            headers = {
                "traceparent": f"00-{trace_id}-{sender_span}-01",
                "tracestate": "sender=abc",
            }
            status, answer, _ = await stack.post(
                "helpdesk",
                {**TICKET, "customer_id": customer},
                webhook_id=f"wh-{uuid.uuid4().hex[:12]}",
                headers=headers,
            )
            assert status == 202, answer
            updates = await stack.crm.wait_for_updates(1, customer_id=customer, timeout_s=90)
            prefix = stack.prefix
            expected = {
                ("hookstream-gateway", "POST /webhooks/{source}", "server"),
                ("hookstream-gateway", "verify", "internal"),
                ("hookstream-gateway", f"send {prefix}.events", "producer"),
                ("hookstream-worker", f"process {prefix}.events", "consumer"),
                ("hookstream-worker", "lookup customer", "client"),
                ("hookstream-worker", f"process {prefix}.enriched", "consumer"),
                ("hookstream-worker", "chat sim-1", "client"),
                ("hookstream-sinks", f"process {prefix}.results", "consumer"),
                ("hookstream-sinks", "deliver crm", "client"),
            }
            # A parent span ends (and is exported) after its children: wait for all of them.
            spans = await receiver.wait_for(
                lambda got: (
                    expected <= {(s.service, s.name, s.kind) for s in got if s.trace_id == trace_id}
                ),
                timeout_s=90,
            )
            results = await read_all(stack.bootstrap, stack.topic("results"))
            records = {
                role: [
                    r
                    for r in await read_all(stack.bootstrap, stack.topic(role))
                    if answer["id"].encode() in (r.value or b"")
                ]
                for role in ("events", "enriched", "results", "receipts")
            }

    # The CRM got the webhook's trace, as the deliver span's child.
    (update,) = updates
    crm_context = parse_traceparent(update["traceparent"])
    assert crm_context is not None
    assert crm_context.trace_id == trace_id

    mine = [s for s in spans if s.trace_id == trace_id]
    assert {(s.service, s.name, s.kind) for s in mine} == expected
    assert all(s.status_code != 2 for s in mine), [s for s in mine if s.status_code == 2]

    # One tree: the gateway's receive span is the child of the sender's span, every other
    # span's parent is a span of this trace, and each hop hangs where it belongs.
    by_id = {s.span_id: s for s in mine}
    assert len(by_id) == len(mine)
    root = _by_name(mine, "POST /webhooks/{source}")
    assert root.parent_span_id == sender_span
    for span in mine:
        if span is not root:
            assert span.parent_span_id in by_id, span

    def parent(name: str) -> str:
        return by_id[_by_name(mine, name).parent_span_id].name

    assert parent("verify") == root.name
    assert parent(f"send {prefix}.events") == root.name
    assert parent(f"process {prefix}.events") == f"send {prefix}.events"
    assert parent("lookup customer") == f"process {prefix}.events"
    assert parent(f"process {prefix}.enriched") == f"process {prefix}.events"
    assert parent("chat sim-1") == f"process {prefix}.enriched"
    assert parent(f"process {prefix}.results") == f"process {prefix}.enriched"
    assert parent("deliver crm") == f"process {prefix}.results"
    assert crm_context.span_id == _by_name(mine, "deliver crm").span_id

    # The model call: GenAI conventions, with the tokens the simulator answered.
    (result,) = [r.json() for r in results if r.json()["event"]["id"] == answer["id"]]
    chat = _by_name(mine, "chat sim-1").attributes
    assert chat["gen_ai.operation.name"] == "chat"
    assert chat["gen_ai.system"] == "openai"
    assert chat["gen_ai.request.model"] == "sim-1"
    assert chat["gen_ai.response.model"] == result["model"]
    assert chat["gen_ai.usage.input_tokens"] == result["usage"]["prompt_tokens"] > 0
    assert chat["gen_ai.usage.output_tokens"] == result["usage"]["completion_tokens"] > 0
    assert chat["hookstream.cost_usd"] == result["cost_usd"]
    assert result["event"]["traceid"] == trace_id

    # Every record of the webhook carries its trace, with the sender's tracestate.
    for role, found in records.items():
        assert found, role
        for record in found:
            assert _trace_of(record) == trace_id, role
            assert record.headers.get("tracestate") == b"sender=abc", role
    receive = root.attributes
    assert receive["http.response.status_code"] == 202
    assert receive["hookstream.source"] == "helpdesk"
    send = _by_name(mine, f"send {prefix}.events").attributes
    assert send["hookstream.event_id"] == answer["id"]
    assert int(send["messaging.destination.partition.id"]) == answer["partition"]
    assert send["messaging.kafka.offset"] == answer["offset"]


async def test_without_spans_the_context_rides_dead_letters_redrives_and_replays(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """No OpenTelemetry configured: the sender's ``traceparent`` is passed on unchanged (the
    same parent id: nothing in between recorded a span) to the CRM lookup, the dead letter,
    its redrive and a replay of the events topic."""
    knobs = {"rate_malformed": 1.0}
    async with running_stack(
        kafka_bootstrap, tmp_path, roles=("gateway", "worker"), ai_knobs=knobs
    ) as stack:
        trace_id, sender_span = _ids()
        sent = f"00-{trace_id}-{sender_span}-01"
        status, answer, _ = await stack.post(
            "helpdesk",
            {**TICKET, "customer_id": "cus_001"},
            webhook_id=f"wh-{uuid.uuid4().hex[:12]}",
            headers={"traceparent": sent},
        )
        assert status == 202, answer
        event_id: str = answer["id"]

        def of_event(records: list[Record]) -> list[Record]:
            return [r for r in records if event_id.encode() in (r.value or b"")]

        letters = await wait_for_records(
            stack.bootstrap, stack.topic("dlq"), lambda rs: bool(of_event(rs)), timeout_s=90
        )
        (letter,) = of_event(letters)
        assert letter.headers["traceparent"] == sent.encode()
        (event,) = of_event(await read_all(stack.bootstrap, stack.topic("events")))
        assert event.headers["traceparent"] == sent.encode()
        assert event.json()["traceid"] == trace_id

        config = ("-c", str(stack.config_path))
        code, _, err = await run_cli("dlq", "redrive", *config, "--stage", "ai", env=stack.env)
        assert code == 0, err

        def redriven(records: list[Record]) -> list[Record]:
            return [r for r in of_event(records) if "hookstream-redriven" in r.headers]

        enriched = await wait_for_records(
            stack.bootstrap, stack.topic("enriched"), lambda rs: bool(redriven(rs))
        )
        assert [r.headers["traceparent"] for r in of_event(enriched)] == [sent.encode()] * 2

        code, _, err = await run_cli(
            "replay", *config, "--topic", "events", "--from", "0", "--yes", env=stack.env
        )
        assert code == 0, err

        def replayed(records: list[Record]) -> list[Record]:
            return [r for r in of_event(records) if "hookstream-replay" in r.headers]

        events = await wait_for_records(
            stack.bootstrap, stack.topic("events"), lambda rs: bool(replayed(rs))
        )
        assert [r.headers["traceparent"] for r in replayed(events)] == [sent.encode()]


async def test_spans_still_buffered_at_a_stop_are_exported_before_the_exit(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With a 10-minute export delay nothing is sent while the webhook flows; SIGTERM to each
    service exports its buffer before the process exits (the SDK's exit hook)."""
    async with running_otlp_receiver() as (receiver, endpoint):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
        async with running_stack(kafka_bootstrap, tmp_path, extra_env=env) as stack:
            customer = f"cus_flush_{uuid.uuid4().hex[:8]}"
            status, answer, _ = await stack.post(
                "helpdesk",
                {**TICKET, "customer_id": customer},
                webhook_id=f"wh-{uuid.uuid4().hex[:12]}",
            )
            assert status == 202, answer
            await stack.crm.wait_for_updates(1, customer_id=customer, timeout_s=90)
            assert receiver.exports == 0
            for proc in stack.procs.values():
                assert await proc.stop() == 0, proc.log_text()[-2000:]
            # Each process waited for its export's answer before exiting.
            services = {span.service for span in receiver.spans}
    assert services == {"hookstream-gateway", "hookstream-worker", "hookstream-sinks"}
    (root,) = [s for s in receiver.spans if s.name == "POST /webhooks/{source}"]
    assert {s.trace_id for s in receiver.spans} == {root.trace_id}
    assert len(receiver.spans) == 9
