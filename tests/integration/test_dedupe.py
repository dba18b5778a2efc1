"""A sender's retries of one delivery give one event downstream: one AI call, one CRM update.

Posted 5 times at once, then again after the gateway restarted. The whole stack runs as real
processes on the example config; the worker's dedupe (agents.stages.enrich) drops the repeats.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from tests.support.ai_stack import metric, scrape
from tests.support.broker import free_port
from tests.support.stack import running_stack


async def test_the_same_delivery_posted_six_times_is_processed_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    port = free_port()
    async with running_stack(
        kafka_bootstrap, tmp_path, extra_env={"HOOKSTREAM_METRICS_PORT": str(port)}
    ) as stack:
        url = f"http://127.0.0.1:{port}/metrics"
        webhook_id = f"wh-{uuid.uuid4().hex}"
        text = f"Ticket {webhook_id}: I love the new dashboard."
        body = {"event": "ticket.created", "ticket_id": "T-1", "customer_id": "cus_009"}
        body["message"] = text
        answers = await asyncio.gather(
            *(stack.post("helpdesk", body, webhook_id=webhook_id) for _ in range(5))
        )
        assert [status for status, _, _ in answers] == [202] * 5

        async def skipped(at_least: int) -> float:
            for _ in range(600):
                count = metric(await scrape(url), "hookstream_duplicates_skipped_total")
                if count >= at_least:
                    return count
                await asyncio.sleep(0.1)
            raise AssertionError(f"fewer than {at_least} duplicates skipped")

        first = (await stack.crm.wait_for_updates(1, customer_id="cus_009", timeout_s=90))[0]
        await skipped(4)

        gateway = stack.procs["gateway"]
        await gateway.stop()
        await gateway.start()
        status, _, _ = await stack.post("helpdesk", body, webhook_id=webhook_id)
        assert status == 202
        await skipped(5)
        # A sentinel: a new delivery for the same customer, posted after the repeats. It has
        # their partition key, so it reaches the AI and the CRM after anything they caused.
        sentinel = {**body, "ticket_id": "T-sentinel", "message": f"{text} (sentinel)"}
        status, _, _ = await stack.post("helpdesk", sentinel, webhook_id=f"{webhook_id}-next")
        assert status == 202
        updates = await stack.crm.wait_for_updates(2, customer_id="cus_009", timeout_s=90)
        assert updates[0] == first
        tickets = [u["body"]["last_feedback_ticket"] for u in updates]
        assert tickets == ["T-1", "T-sentinel"], updates  # nothing from the repeats between
        assert updates[1]["idempotency_key"] != first["idempotency_key"]
        assert len(await stack.ai.calls_for(text)) == 1
