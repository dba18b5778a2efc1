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

        await stack.crm.wait_for_updates(1, customer_id="cus_009", timeout_s=90)
        await skipped(4)

        gateway = stack.procs["gateway"]
        await gateway.stop()
        await gateway.start()
        status, _, _ = await stack.post("helpdesk", body, webhook_id=webhook_id)
        assert status == 202
        await skipped(5)
        await asyncio.sleep(1.0)  # a second update, if any, would have reached the CRM by now
        updates = await stack.crm.updates(customer_id="cus_009")
        keys = [u["idempotency_key"] for u in updates]
        assert len(keys) == 1, keys
        assert len(await stack.ai.calls_for(text)) == 1
