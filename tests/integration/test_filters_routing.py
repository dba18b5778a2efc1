"""match.where, a sink's when and template filters with the real worker and sink worker on the
shared broker, the AI, CRM and Slack simulators (issue 14, "Filters and routing").

The flows file is the example's, with three changes: the feedback flow takes no event whose
``data.channel`` is ``internal`` (``where``), its CRM and Slack sinks deliver only negative
results (``when``), and the CRM body's ticket is ``{{ data.ticket_id | default("n/a") }}``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from streams.client import Publisher, make_event
from streams.dev.ai_sim import analyse
from tests.support.broker import free_port
from tests.support.kafka import read_all, wait_for_records
from tests.support.sinkstack import SlackSimHandle, run_cli, running_slack_sim, wait_until
from tests.support.stack import EXAMPLE_CONFIG, Proc, Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

NEGATIVE_ONLY = {"field": "result.sentiment", "equals": "negative"}
NEGATIVE = "The export crashed again, this is terrible"
POSITIVE = "Great new dashboard, thank you"


def filters_config(workdir: Path) -> Path:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["worker"] = {"allow_private_networks": True, "retry_backoff_s": 0.2}
    feedback = data["flows"][0]
    feedback["match"]["where"] = {"not": {"field": "data.channel", "equals": "internal"}}
    [crm] = feedback["sinks"]
    crm["when"] = NEGATIVE_ONLY
    crm["body"]["last_feedback_ticket"] = '{{ data.ticket_id | default("n/a") }}'
    feedback["sinks"].append(
        {
            "name": "slack",
            "kind": "slack",
            "webhook_url_env": "TEST_SLACK_WEBHOOK_URL",
            "when": NEGATIVE_ONLY,
            "text": "{{ data.customer_id }}: {{ result.summary | upper | truncate(30) }}",
        }
    )
    path = workdir / "flows-filters.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class Routing:
    stack: Stack
    slack: SlackSimHandle
    sinks_metrics_url: str

    async def publish(self, customer: str, message: str, **fields: Any) -> str:
        event = make_event(
            {"event": "ticket.created", "customer_id": customer, "message": message, **fields},
            source="helpdesk",
            type="ticket.created",
            key=customer,
            id=f"route-{uuid.uuid4().hex}",
        )
        async with Publisher(
            bootstrap_servers=self.stack.bootstrap, topic_prefix=self.stack.prefix
        ) as publisher:
            await publisher.publish_event(event)
        return event.id


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def routing(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Routing]:
    workdir: Path = tmp_path_factory.mktemp("routing")
    config = filters_config(workdir)
    async with running_slack_sim() as slack:
        env = {"TEST_SLACK_WEBHOOK_URL": slack.webhook_url("support")}
        async with running_stack(
            kafka_bootstrap, workdir, config_path=config, roles=("worker",), extra_env=env
        ) as stack:
            # The sink worker started here rather than by running_stack: with a metrics port.
            port = free_port()
            sinks = Proc(
                name="sinks",
                args=["sinks", "-c", str(config), "-l", "info", "--metrics-port", str(port)],
                env={k: v for k, v in stack.env.items() if k != "HOOKSTREAM_METRICS_PORT"},
                log_path=workdir / "sinks.log",
            )
            stack.procs["sinks"] = sinks
            await sinks.start()
            yield Routing(stack, slack, f"http://127.0.0.1:{port}/metrics")


def _about(records: list[Any], event_id: str) -> list[Any]:
    return [r for r in records if event_id.encode() in r.value]


async def test_an_event_where_filters_out_gets_no_result(routing: Routing) -> None:
    # Same key, so the same partition: the filtered event is handled before the one after it.
    filtered = await routing.publish("cus_101", NEGATIVE, channel="internal")
    taken = await routing.publish("cus_101", NEGATIVE, channel="email")
    await wait_for_records(
        routing.stack.bootstrap,
        routing.stack.topic("results"),
        lambda rs: bool(_about(rs, taken)),
        timeout_s=120,
    )
    for role in ("enriched", "results", "dlq"):
        records = await read_all(routing.stack.bootstrap, routing.stack.topic(role))
        assert _about(records, filtered) == [], role
    assert _about(await read_all(routing.stack.bootstrap, routing.stack.topic("events")), filtered)


async def test_a_negative_result_is_delivered_with_the_default_rendered(routing: Routing) -> None:
    event_id = await routing.publish("cus_102", NEGATIVE)  # no ticket_id
    [update] = await routing.stack.crm.wait_for_updates(1, customer_id="cus_102", timeout_s=120)
    assert update["body"]["last_feedback_ticket"] == "n/a"
    assert update["body"]["last_feedback_sentiment"] == "negative"
    key = f"helpdesk/{event_id}/feedback-triage/slack"

    async def message() -> list[dict[str, Any]]:
        return [m for m in await routing.slack.messages() if m["idempotency_key"] == key]

    [posted] = await wait_until(message)
    summary = analyse(NEGATIVE).summary.upper()[:30]
    assert posted["text"] == f"cus_102: {summary}"


async def test_a_result_whose_when_is_false_is_skipped_and_recorded(routing: Routing) -> None:
    assert analyse(POSITIVE).sentiment == "positive"
    event_id = await routing.publish("cus_103", POSITIVE, ticket_id="T-1")

    def skipped_by_both(records: list[Any]) -> bool:
        mine = [r.json() for r in _about(records, event_id)]
        return {r["sink"] for r in mine if r["outcome"] == "skipped_when"} == {"crm", "slack"}

    receipts = await wait_for_records(
        routing.stack.bootstrap, routing.stack.topic("receipts"), skipped_by_both, timeout_s=120
    )
    for receipt in (r.json() for r in _about(receipts, event_id)):
        assert (receipt["outcome"], receipt["status"], receipt["attempts"]) == (
            "skipped_when",
            0,
            0,
        )
    # The receipts are written after the decision not to send: nothing was sent, nor will be.
    assert await routing.stack.crm.updates(customer_id="cus_103") == []
    assert [m for m in await routing.slack.messages() if event_id in m["idempotency_key"]] == []

    code, out, err = await run_cli(
        "trace", "-c", str(routing.stack.config_path), event_id, env=routing.stack.env
    )
    assert code == 0, err
    assert "feedback-triage  crm  skipped (when)" in out
    assert "feedback-triage  slack  skipped (when)" in out

    async with (
        aiohttp.ClientSession() as session,
        session.get(routing.sinks_metrics_url) as response,
    ):
        metrics = await response.text()
    for sink in ("crm", "slack"):
        line = (
            f'hookstream_sink_deliveries_total{{flow="feedback-triage",outcome="skipped_when",'
            f'sink="{sink}"}} 1.0'
        )
        assert line in metrics.splitlines(), [m for m in metrics.splitlines() if "skipped" in m]
