"""``hookstream flow test`` in process: the report of one webhook, the partial match of the
YAML tests and their file's errors (no broker, no model: answers are given)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.config import HookstreamConfig
from schemas.config_loader import load_config
from schemas.errors import ToolError
from streams.cli.flowtest import report_lines
from streams.cli.flowtest_run import HIDDEN, FlowInput, FlowTester
from streams.cli.flowtest_suite import default_tests_path, differences, load_tests
from tests.support.stack import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
BUG = EXAMPLES / "webhooks" / "helpdesk-02-bug.json"
GOOD = {"sentiment": "negative", "category": "bug", "summary": "CSV export broken"}
SECRET_ENV = {
    "SLACK_WEBHOOK_URL": "https://hooks.slack.example/T000/B000/secret-path-xyz",
    "WAREHOUSE_DSN": "postgresql://warehouse:pw-not-shown@db.example/warehouse",
    "HELPDESK_WEBHOOK_SECRET": "helpdesk-secret",
    "AI_API_KEY": "sk-not-shown",
}


def _given(answers: list[Any], **kwargs: Any) -> FlowInput:
    body = BUG.read_bytes()
    return FlowInput(
        source="helpdesk",
        body=body,
        payload=orjson.loads(body),
        headers={"X-Webhook-Id": "wh-1"},
        answers=[a if isinstance(a, str) else orjson.dumps(a).decode() for a in answers],
        **kwargs,
    )


async def _report(config: HookstreamConfig, given: FlowInput) -> dict[str, Any]:
    async with FlowTester(config) as tester:
        return await tester.run(given)


async def test_a_matching_flow_shows_its_lookup_prompt_answer_and_sink_request() -> None:
    config = load_config(EXAMPLES / "flows.yaml", require_secrets=False)
    report = await _report(config, _given([GOOD], lookups={"customer": {"name": "Ada"}}))
    assert report["matched"] == ["feedback-triage"]
    assert report["event"]["id"] == "wh-1"  # the source's id_header, as the gateway reads it
    flow = report["flows"]["feedback-triage"]
    assert flow["lookups"]["customer"] == {
        "url": "http://127.0.0.1:8092/customers/cus_002",
        "answer": "given",
        "value": {"name": "Ada"},
    }
    assert flow["model"]["prompt"] == orjson.loads(BUG.read_bytes())["message"]
    assert flow["model"]["payload"]["response_format"]["type"] == "json_schema"
    assert flow["answer"]["output"] == GOOD
    assert flow["sinks"]["crm"] == {
        "kind": "http",
        "method": "PUT",
        "url": "http://127.0.0.1:8092/customers/cus_002",
        "headers": {"Idempotency-Key": "helpdesk/wh-1/feedback-triage/crm"},
        "body": {
            "last_feedback_sentiment": "negative",
            "last_feedback_category": "bug",
            "last_feedback_summary": "CSV export broken",
            "last_feedback_ticket": "T-1002",
        },
    }
    other = report["flows"]["payment-followup"]
    assert other == {"matched": False, "why_not": "source is helpdesk, the flow takes payments"}


async def test_an_invalid_answer_is_re_asked_and_a_valid_re_ask_answer_is_taken() -> None:
    config = load_config(EXAMPLES / "flows.yaml", require_secrets=False)
    report = await _report(config, _given([{"sentiment": "furious"}, GOOD]))
    answer = report["flows"]["feedback-triage"]["answer"]
    assert answer["output"] == GOOD
    assert answer["reasked"] is True


async def test_without_an_answer_the_prompt_is_shown_and_no_sink_is_rendered() -> None:
    config = load_config(EXAMPLES / "flows.yaml", require_secrets=False)
    report = await _report(config, _given([]))
    flow = report["flows"]["feedback-triage"]
    assert flow["model"]["system"].startswith("You triage customer feedback")
    assert flow["answer"] is None
    assert flow["sinks"] is None
    assert "answer: none (give --answer FILE or --call-model" in "\n".join(report_lines(report))


async def test_secrets_are_never_in_the_report() -> None:
    config = load_config(EXAMPLES / "flows-sinks.yaml", env=SECRET_ENV)
    report = await _report(config, _given([GOOD]))
    text = orjson.dumps(report).decode() + "\n".join(report_lines(report))
    for name in ("SLACK_WEBHOOK_URL", "WAREHOUSE_DSN", "AI_API_KEY"):
        assert SECRET_ENV[name] not in text
    sinks = report["flows"]["feedback-triage"]["sinks"]
    assert sinks["support-channel"]["url"].startswith(HIDDEN)
    assert (
        sinks["support-channel"]["body"]["text"] == "*cus_002* (negative, bug): CSV export broken"
    )
    assert sinks["warehouse"]["row"]["customer_id"] == "cus_002"


async def test_an_http_sink_api_key_is_shown_hidden(tmp_path: Path) -> None:
    text = (EXAMPLES / "flows.yaml").read_text()
    text = text.replace(
        "        method: PUT\n", "        method: PUT\n        api_key_env: CRM_KEY\n"
    )
    path = tmp_path / "flows.yaml"
    path.write_text(text)
    config = load_config(path, env={"CRM_KEY": "crm-key-not-shown"}, require_secrets=False)
    report = await _report(config, _given([GOOD]))
    headers = report["flows"]["feedback-triage"]["sinks"]["crm"]["headers"]
    assert headers["Authorization"] == f"Bearer {HIDDEN}"
    assert "crm-key-not-shown" not in orjson.dumps(report).decode()


async def test_an_unknown_source_names_the_known_ones() -> None:
    config = load_config(EXAMPLES / "flows.yaml", require_secrets=False)
    given = _given([GOOD])
    wrong = FlowInput(source="zendesk", body=given.body, payload=given.payload)
    with pytest.raises(
        ToolError, match=r"'zendesk' is not one of the config's \(helpdesk, payments\)"
    ):
        await _report(config, wrong)


@pytest.mark.parametrize(
    ("expected", "actual", "found"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, []),  # keys not named are not checked
        ({"a": {"b": 1}}, {"a": {"b": 2, "c": 3}}, ["a.b: expected 1, got 2"]),
        ({"a": 1}, {}, ["a: expected 1, got nothing"]),
        ({"a": [1, 2]}, {"a": [1]}, ["a: expected [1,2], got [1]"]),
        ({"a": [{"x": 1}]}, {"a": [{"x": 1, "y": 2}]}, []),
        ({"a": None}, {"a": {"stage": "ai"}}, ['a: expected null, got {"stage":"ai"}']),
        ({"a": True}, {"a": 1}, ["a: expected true, got 1"]),
        ({"a": "x"}, {"a": ["x"]}, ['a: expected "x", got ["x"]']),
    ],
)
def test_partial_match(expected: Any, actual: Any, found: list[str]) -> None:
    assert differences(expected, actual) == found


def test_the_default_tests_file_is_beside_the_flows_file() -> None:
    assert default_tests_path("examples/flows.yaml") == Path("examples/flows.tests.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tests: []\n", r"t\.yaml: tests: List should have at least 1 item"),
        (
            "tests:\n  - {name: x, source: helpdesk}\n",
            r"t\.yaml: tests\[0\]: Value error, give the webhook body as event or event_file",
        ),
        (
            "tests:\n  - {name: x, source: s, event: {}, expected: {}}\n",
            r"t\.yaml: tests\[0\]\.expected: Extra inputs are not permitted",
        ),
        ("tests:\n  - {name: x\n", r"t\.yaml:3: not YAML: expected ',' or '}'"),
    ],
)
def test_a_bad_tests_file_names_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(ToolError, match=message):
        load_tests(path)


async def test_match_where_and_a_sinks_when_are_reported(tmp_path: Path) -> None:
    text = (EXAMPLES / "flows.yaml").read_text()
    text = text.replace(
        '      types: ["ticket.*"]\n',
        '      types: ["ticket.*"]\n      where: {field: data.customer_id, equals: cus_001}\n',
    )
    path = tmp_path / "flows.yaml"
    path.write_text(text)
    config = load_config(path, require_secrets=False)
    report = await _report(config, _given([GOOD]))  # cus_002's ticket
    assert report["matched"] == []
    assert report["flows"]["feedback-triage"]["why_not"] == (
        'match.where is false for this event: {"field":"data.customer_id","equals":"cus_001"}'
    )

    text = (
        (EXAMPLES / "flows.yaml")
        .read_text()
        .replace(
            "        method: PUT\n",
            "        method: PUT\n        when: {field: result.sentiment, equals: positive}\n",
            1,
        )
    )
    path.write_text(text)
    config = load_config(path, require_secrets=False)
    report = await _report(config, _given([GOOD]))  # a negative answer
    crm = report["flows"]["feedback-triage"]["sinks"]["crm"]
    assert crm == {
        "kind": "http",
        "skipped": 'when is false: {"field":"result.sentiment","equals":"positive"}',
    }
    assert "    sink crm (http): skipped, when is false: " in "\n".join(report_lines(report))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--all", "--source", "helpdesk"], "--all runs the tests file: give no EVENT.json"),
        ([], "give --source SOURCE and the webhook body EVENT.json (or --all)"),
        (
            ["--source", "helpdesk", str(BUG), "--answer", str(BUG), "--call-model"],
            "give --answer FILE or --call-model, not both",
        ),
        (["--source", "helpdesk", str(BUG), "--lookup", "customer"], "--lookup 'customer': give"),
        (["--source", "helpdesk", "missing.json"], "EVENT missing.json: cannot read it"),
    ],
)
def test_wrong_arguments_are_one_line_and_exit_2(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from streams.cli.main import main

    assert main(["flow", "test", "-c", str(EXAMPLES / "flows.yaml"), *extra]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"hookstream: {message}")
    assert len(err.splitlines()) == 1
