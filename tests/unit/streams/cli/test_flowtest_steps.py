"""``hookstream flow test`` on a multi-step flow and a flow with no AI step (in process, the
answers given): each step's prompt, the later step's holding the earlier answer, and the
output mapping of a flow that makes no call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from schemas.config_loader import load_config
from streams.cli.flowtest import report_lines
from streams.cli.flowtest_run import FlowInput, FlowTester
from tests.support.stack import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
CLASSIFY = {"sentiment": "negative", "category": "bug", "summary": "Export broken"}
DRAFT = {"reply": "Sorry, a fix is coming."}


def _given(webhook: str, source: str, answers: list[Any]) -> FlowInput:
    body = (EXAMPLES / "webhooks" / webhook).read_bytes()
    return FlowInput(
        source=source,
        body=body,
        payload=orjson.loads(body),
        headers={"X-Webhook-Id": "wh-1"},
        answers=[orjson.dumps(a).decode() for a in answers],
    )


async def _report(given: FlowInput, path: Path = EXAMPLES / "flows-steps.yaml") -> dict[str, Any]:
    async with FlowTester(load_config(path, require_secrets=False)) as tester:
        return await tester.run(given)


async def test_each_step_gets_its_answer_and_the_later_prompt_holds_the_earlier() -> None:
    given = _given("helpdesk-02-bug.json", "helpdesk", [{"classify": CLASSIFY, "draft": DRAFT}])
    report = await _report(given)
    flow = report["flows"]["ticket-reply"]
    steps = flow["steps"]
    assert steps["classify"]["answer"]["output"] == CLASSIFY
    assert steps["draft"]["model"]["prompt"] == (
        "Draft a reply to this negative bug ticket: Export broken"
    )
    assert steps["draft"]["answer"]["output"] == DRAFT
    assert flow["sinks"]["crm"]["body"] == {
        "last_feedback_sentiment": "negative",
        "last_feedback_category": "bug",
        "last_feedback_summary": "Export broken",
        "draft_reply": "Sorry, a fix is coming.",
    }
    lines = report_lines(report)
    assert lines.index("    step classify:") < lines.index("    step draft:")
    assert "            prompt: Draft a reply to this negative bug ticket: Export broken" in lines


async def test_a_step_without_an_answer_stops_there_with_no_sink() -> None:
    report = await _report(_given("helpdesk-02-bug.json", "helpdesk", [{"classify": CLASSIFY}]))
    flow = report["flows"]["ticket-reply"]
    assert flow["steps"]["draft"]["model"]["prompt"].endswith("ticket: Export broken")
    assert flow["steps"]["draft"]["answer"] is None
    assert flow["sinks"] is None
    assert "        answer: none (give --answer FILE or --call-model to see the sinks)" in (
        report_lines(report)
    )


async def test_an_invalid_step_answer_is_the_flows_dead_letter() -> None:
    bad = {"classify": {"sentiment": "furious"}, "draft": DRAFT}
    report = await _report(_given("helpdesk-02-bug.json", "helpdesk", [bad]))
    flow = report["flows"]["ticket-reply"]
    assert flow["dead_letter"]["error_class"] == "InvalidModelOutput"
    assert flow["steps"]["classify"]["dead_letter"] == flow["dead_letter"]
    assert "draft" not in flow["steps"]  # never asked


async def test_a_flow_with_no_ai_step_reports_its_output_and_no_model() -> None:
    report = await _report(_given("payments-01-failed.json", "payments", []))
    flow = report["flows"]["payment-sync"]
    assert flow["model"] is None
    output = {"event": "payment.failed", "amount": 4900, "currency": "EUR"}
    assert flow["answer"]["output"] == output
    assert flow["sinks"]["crm"]["body"]["last_payment_amount"] == 4900
    assert f"    output (no AI step, no model call): {orjson.dumps(output).decode()}" in (
        report_lines(report)
    )
