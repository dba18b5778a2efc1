"""Signed webhooks in at the gateway, AI-derived updates out at the CRM: the whole path.

Everything is real: the Apache Kafka broker, the gateway, the Faust worker and sink worker as
separate processes, the AI and CRM simulators as HTTP servers in their own processes.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from schemas.events import AIResult, CloudEvent, DeadLetter, EnrichedEvent
from streams.dev.ai_sim import analyse
from tests.support.kafka import committed_offsets, read_all, wait_for_records
from tests.support.stack import REPO_ROOT, Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("e2e")
    async with running_stack(kafka_bootstrap, workdir) as running:
        yield running


def feedback(customer: str, message: str) -> dict[str, Any]:
    return {
        "event": "ticket.created",
        "ticket_id": f"T-{uuid.uuid4().hex[:8]}",
        "customer_id": customer,
        "message": message,
    }


def payment(customer: str, description: str) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:12]}",
        "type": "payment.failed",
        "data": {"customer": customer, "amount": 4200, "description": description},
    }


async def test_every_signed_webhook_becomes_a_crm_update(stack: Stack) -> None:
    tickets = [
        ("cus_001", "I love the new dashboard, thanks a lot!"),
        ("cus_002", "The export is broken again and support is slow. I want a refund."),
        ("cus_003", "How do I change the email address on my account?"),
        ("cus_001", "Could you add a dark mode? That would be great."),
    ]
    payments = [
        ("cus_004", "Card declined: the payment failed for the third time this month."),
        ("cus_005", "Payment succeeded after retry, thanks."),
    ]
    sent: dict[str, tuple[str, str, str]] = {}
    for customer, message in tickets:
        body = feedback(customer, message)
        webhook_id = f"wh-{uuid.uuid4().hex}"
        status, answer, _ = await stack.post("helpdesk", body, webhook_id=webhook_id)
        assert status == 202, answer
        assert answer["id"] == webhook_id
        sent[f"helpdesk/{webhook_id}"] = ("helpdesk", customer, message)
    for customer, description in payments:
        body = payment(customer, description)
        status, answer, _ = await stack.post("payments", body)
        assert status == 202, answer
        assert answer["id"] == body["id"]
        sent[f"payments/{body['id']}"] = ("payments", customer, description)

    updates = await stack.crm.wait_for_updates(len(sent), timeout_s=90)
    by_key = {u["idempotency_key"].rsplit("/", 2)[0]: u for u in updates}
    assert set(by_key) == set(sent)
    for event_key, (source, customer, text) in sent.items():
        update = by_key[event_key]
        expected = analyse(text)
        assert update["customer_id"] == customer
        if source == "helpdesk":
            assert update["body"]["last_feedback_sentiment"] == expected.sentiment
            assert update["body"]["last_feedback_category"] == expected.category
            assert update["body"]["last_feedback_summary"] == expected.summary
        else:
            assert update["body"]["last_payment_sentiment"] == expected.sentiment
            assert update["body"]["last_payment_summary"] == expected.summary
            assert update["body"]["last_payment_event"] == "payment.failed"

    # Per customer, the CRM saw the updates in the order the webhooks were sent.
    cus_001 = [u for u in updates if u["customer_id"] == "cus_001"]
    assert [u["body"]["last_feedback_summary"] for u in cus_001] == [
        analyse(tickets[0][1]).summary,
        analyse(tickets[3][1]).summary,
    ]


async def test_topics_hold_plain_json_of_each_stage(stack: Stack) -> None:
    webhook_id = f"wh-{uuid.uuid4().hex}"
    body = feedback("cus_006", "Excellent support today, thank you.")
    status, _, _ = await stack.post("helpdesk", body, webhook_id=webhook_id)
    assert status == 202

    def has_result(records: list[Any]) -> bool:
        return any(r.json()["event"]["id"] == webhook_id for r in records)

    results = await wait_for_records(stack.bootstrap, stack.topic("results"), has_result)
    result = AIResult.model_validate(
        next(r.json() for r in results if r.json()["event"]["id"] == webhook_id)
    )
    assert result.flow == "feedback-triage"
    assert result.output["sentiment"] == "positive"
    assert result.attempts == 1
    assert result.usage.total_tokens > 0
    assert result.enrichment["customer"]["id"] == "cus_006"  # the CRM lookup's record

    events = [
        r
        for r in await read_all(stack.bootstrap, stack.topic("events"))
        if r.json()["id"] == webhook_id
    ]
    assert len(events) == 1
    event = CloudEvent.model_validate(events[0].json())
    assert event.specversion == "1.0"
    assert event.source == "helpdesk"
    assert event.type == "ticket.created"
    assert event.data == body
    assert events[0].key == b"cus_006"
    assert "x-signature" not in event.webhookheaders

    enriched = [
        r
        for r in await read_all(stack.bootstrap, stack.topic("enriched"))
        if r.json()["event"]["id"] == webhook_id
    ]
    assert EnrichedEvent.model_validate(enriched[0].json()).flow == "feedback-triage"

    receipts = await wait_for_records(
        stack.bootstrap,
        stack.topic("receipts"),
        lambda rs: any(r.json()["event_key"] == f"helpdesk/{webhook_id}" for r in rs),
    )
    receipt = next(r.json() for r in receipts if r.json()["event_key"] == f"helpdesk/{webhook_id}")
    assert receipt["sink"] == "crm"
    assert receipt["status"] == 200


async def test_malformed_model_output_is_retried_then_dead_lettered(stack: Stack) -> None:
    await stack.ai.configure(rate_malformed=1.0)
    try:
        webhook_id = f"wh-{uuid.uuid4().hex}"
        text = f"Please review invoice {webhook_id}."
        status, _, _ = await stack.post(
            "helpdesk", feedback("cus_007", text), webhook_id=webhook_id
        )
        assert status == 202

        def dead(records: list[Any]) -> bool:
            return any(r.json()["event"]["id"] == webhook_id for r in records)

        records = await wait_for_records(stack.bootstrap, stack.topic("dlq"), dead, timeout_s=60)
    finally:
        await stack.ai.configure(rate_malformed=0.0)
    record = next(r for r in records if r.json()["event"]["id"] == webhook_id)
    letter = DeadLetter.from_headers(list(record.headers.items()), record.json())
    assert letter.stage == "ai"
    assert letter.error_class == "InvalidModelOutput"
    assert "not JSON" in letter.error_message
    assert letter.attempts == 2  # the answer, then one re-ask carrying the errors (issue 4)
    assert letter.original_topic == stack.topic("enriched")
    assert letter.first_failure_at <= letter.last_failure_at
    # The original value is kept byte for byte: it is the enriched record itself.
    assert EnrichedEvent.model_validate(record.json()).event.id == webhook_id
    assert len(await stack.ai.calls_for(text)) == 2
    assert not [u for u in await stack.crm.updates() if webhook_id in u["idempotency_key"]]


async def test_worker_commits_only_handled_events(stack: Stack) -> None:
    """After the pipeline drained, the worker group's commit equals the end of the topic."""
    webhook_id = f"wh-{uuid.uuid4().hex}"
    status, answer, _ = await stack.post(
        "helpdesk", feedback("cus_008", "Thanks, all good."), webhook_id=webhook_id
    )
    assert status == 202
    await stack.crm.wait_for_updates(1, customer_id="cus_008", timeout_s=60)
    events_topic = stack.topic("events")
    for _ in range(50):
        committed = await committed_offsets(stack.bootstrap, f"{stack.prefix}-worker", events_topic)
        if committed.get(answer["partition"], -1) >= answer["offset"] + 1:
            break
        await asyncio.sleep(0.2)
    assert committed[answer["partition"]] == answer["offset"] + 1


async def test_a_refused_delivery_is_dead_lettered_at_once(stack: Stack) -> None:
    """A 4xx (other than 408/429) from the target means the request is wrong: no retries."""
    await stack.crm.configure(fail_status=422, fail_methods=["PUT"])
    try:
        webhook_id = f"wh-{uuid.uuid4().hex}"
        status, _, _ = await stack.post(
            "helpdesk", feedback("cus_009", "Where is my order?"), webhook_id=webhook_id
        )
        assert status == 202

        def dead(records: list[Any]) -> bool:
            return any(
                r.headers.get("hookstream-dlq-stage") == b"sink"
                and r.json()["event"]["id"] == webhook_id
                for r in records
            )

        records = await wait_for_records(stack.bootstrap, stack.topic("dlq"), dead)
    finally:
        await stack.crm.configure(fail_status=None, fail_methods=None)
    record = next(
        r
        for r in records
        if r.headers.get("hookstream-dlq-stage") == b"sink"
        and r.json()["event"]["id"] == webhook_id
    )
    assert record.headers["hookstream-dlq-error_class"] == b"PermanentRemoteError"
    assert b"HTTP 422" in record.headers["hookstream-dlq-error_message"]
    assert record.headers["hookstream-dlq-attempts"] == b"1"
    assert record.headers["hookstream-sink"] == b"crm"
    assert record.headers["hookstream-dlq-original_topic"] == stack.topic("results").encode()
    assert AIResult.model_validate(record.json()).output["summary"] == "Where is my order?"


async def test_kafkas_console_consumer_reads_events_and_results_as_json(stack: Stack) -> None:
    webhook_id = f"wh-{uuid.uuid4().hex}"
    status, _, _ = await stack.post(
        "helpdesk", feedback("cus_010", "Great service."), webhook_id=webhook_id
    )
    assert status == 202
    await stack.crm.wait_for_updates(1, customer_id="cus_010", timeout_s=60)
    for role in ("events", "results"):
        count = len(await read_all(stack.bootstrap, stack.topic(role)))
        process = await asyncio.create_subprocess_exec(
            str(REPO_ROOT / "scripts" / "kafka"),
            "console-consumer",
            stack.topic(role),
            "--bootstrap-server",
            stack.bootstrap,
            "--from-beginning",
            "--max-messages",
            str(count),
            "--timeout-ms",
            "30000",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        values = [orjson.loads(line) for line in out.decode().splitlines() if line.strip()]
        assert values, err.decode()[-2000:]
        ids = [v["id"] if role == "events" else v["event"]["id"] for v in values]
        assert webhook_id in ids
