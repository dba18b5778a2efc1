"""``hookstream flow test`` as a user runs it: without Kafka, the example's tests file, a failing
test's exit status and diff, and a real model call against the AI simulator.

"Without Kafka" is checked, not assumed: the config's broker address is a socket that listens
but never answers; after the command exits, nothing has connected to it (a connection would
sit in its accept queue).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.dev.ai_sim_logic import analyse
from streams.dev.crm_sim import seed_customers
from tests.support.sims import running_ai_sim, running_crm_sim
from tests.support.stack import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "flows.yaml"
BUG = REPO_ROOT / "examples" / "webhooks" / "helpdesk-02-bug.json"


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A listening address that no Kafka client gets an answer from; fails the test if
    anything connected to it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield f"127.0.0.1:{listener.getsockname()[1]}"
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return  # nothing connected
        connection.close()
        pytest.fail(f"something connected to the config's Kafka address {listener}")


async def hookstream(
    *args: str, env: dict[str, str], drop: tuple[str, ...] = ()
) -> tuple[int, str, str]:
    """Run the command; ``env`` is added to this process's environment, ``drop`` removed."""
    kept = {name: value for name, value in os.environ.items() if name not in drop}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.cli.main",
        *args,
        cwd=REPO_ROOT,
        env={**kept, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_example_tests_pass_without_kafka(silent_broker: str) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": silent_broker}
    code, out, err = await hookstream("flow", "test", "-c", str(EXAMPLE), "--all", env=env)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len([line for line in lines if line.startswith("PASS  ")]) == 5
    assert lines[-1] == f"5 passed, 0 failed ({REPO_ROOT / 'examples' / 'flows.tests.yaml'})"


async def test_the_steps_example_tests_pass_without_kafka(silent_broker: str) -> None:
    steps = REPO_ROOT / "examples" / "flows-steps.yaml"
    env = {"KAFKA_BOOTSTRAP_SERVERS": silent_broker}
    code, out, err = await hookstream("flow", "test", "-c", str(steps), "--all", env=env)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "PASS  the draft step's prompt holds the classify step's answer",
        "PASS  a payment is copied to the CRM with no model call",
        f"2 passed, 0 failed ({REPO_ROOT / 'examples' / 'flows-steps.tests.yaml'})",
    ]


async def test_one_event_with_an_answer_prints_the_sink_request(
    silent_broker: str, tmp_path: Path
) -> None:
    answer = tmp_path / "answer.json"
    answer.write_text('{"sentiment": "negative", "category": "bug", "summary": "export broken"}')
    customer = tmp_path / "customer.json"
    customer.write_text('{"name": "Grace"}')
    code, out, err = await hookstream(
        "flow",
        "test",
        "-c",
        str(EXAMPLE),
        "--source",
        "helpdesk",
        str(BUG),
        "--header",
        "X-Webhook-Id=wh-9",
        "--lookup",
        f"customer={customer}",
        "--answer",
        str(answer),
        env={"KAFKA_BOOTSTRAP_SERVERS": silent_broker},
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "event helpdesk/wh-9 type ticket.created key cus_002"
    assert "    lookup customer: GET http://127.0.0.1:8092/customers/cus_002 " in out
    crm = lines.index("    sink crm (http): PUT http://127.0.0.1:8092/customers/cus_002")
    assert lines[crm + 1] == "        Idempotency-Key: helpdesk/wh-9/feedback-triage/crm"
    body = orjson.loads(lines[crm + 2].removeprefix("        body: "))
    assert body["last_feedback_summary"] == "export broken"
    assert lines[-1] == (
        "flow payment-followup: no match (source is helpdesk, the flow takes payments)"
    )


async def test_a_failing_test_exits_7_with_what_differed(tmp_path: Path) -> None:
    tests = tmp_path / "flows.tests.yaml"
    tests.write_text(
        """
tests:
  - name: sentiment goes to the CRM
    source: helpdesk
    event: {event: ticket.created, ticket_id: T-1, customer_id: cus_1, message: broken}
    answer: {sentiment: negative, category: bug, summary: broken}
    expect:
      matched: [feedback-triage]
      flows:
        feedback-triage:
          sinks: {crm: {body: {last_feedback_sentiment: positive}}}
  - name: nothing matches a chat
    source: helpdesk
    event: {event: chat.started, customer_id: cus_1, message: hi}
    expect: {matched: []}
"""
    )
    code, out, err = await hookstream(
        "flow", "test", "-c", str(EXAMPLE), "--all", "--tests", str(tests), env={}
    )
    assert (code, err) == (7, "")
    assert out.splitlines() == [
        "FAIL  sentiment goes to the CRM",
        "    flows.feedback-triage.sinks.crm.body.last_feedback_sentiment: expected "
        '"positive", got "negative"',
        "PASS  nothing matches a chat",
        f"1 passed, 1 failed ({tests})",
    ]


async def test_call_model_prints_the_simulators_answer_validated(silent_broker: str) -> None:
    message = orjson.loads(BUG.read_bytes())["message"]
    expected = analyse(message)
    async with running_ai_sim() as sim:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": silent_broker,
            "HOOKSTREAM_AI_BASE_URL": sim.base_url,
            "AI_API_KEY": "sim-key",
        }
        args = ("flow", "test", "-c", str(EXAMPLE), "--source", "helpdesk", str(BUG))
        code, out, err = await hookstream(*args, "--call-model", "--json", env=env)
        calls = await sim.calls_for(message)
    assert (code, err) == (0, "")
    flow = orjson.loads(out)["flows"]["feedback-triage"]
    assert flow["answer"]["from"] == "model"
    assert flow["answer"]["output"]["sentiment"] == expected.sentiment
    assert flow["answer"]["output"]["category"] == expected.category
    assert flow["sinks"]["crm"]["body"]["last_feedback_sentiment"] == expected.sentiment
    assert [call["status"] for call in calls] == [200]


async def test_call_model_without_the_api_key_names_its_variable() -> None:
    args = ("flow", "test", "-c", str(EXAMPLE), "--source", "helpdesk", str(BUG))
    code, out, err = await hookstream(*args, "--call-model", env={}, drop=("AI_API_KEY",))
    assert (code, out) == (2, "")
    assert err == "hookstream: --call-model: provider default's API key (AI_API_KEY) is unset\n"


async def test_call_lookups_gets_the_crm_simulators_customer(silent_broker: str) -> None:
    async with running_crm_sim(seed_customers=3) as crm:
        env = {"KAFKA_BOOTSTRAP_SERVERS": silent_broker, "HOOKSTREAM_CRM_URL": crm.base_url}
        args = ("flow", "test", "-c", str(EXAMPLE), "--source", "helpdesk", str(BUG))
        code, out, err = await hookstream(*args, "--call-lookups", "--json", env=env)
    assert (code, err) == (0, "")
    lookup = orjson.loads(out)["flows"]["feedback-triage"]["lookups"]["customer"]
    assert lookup["url"] == f"{crm.base_url}/customers/cus_002"
    assert lookup["answer"] == "called"
    assert lookup["value"] == seed_customers(3)["cus_002"]


async def test_a_model_that_never_answers_stops_at_the_timeout(silent_broker: str) -> None:
    async with running_ai_sim(rate_500=1.0) as sim:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": silent_broker,
            "HOOKSTREAM_AI_BASE_URL": sim.base_url,
            "AI_API_KEY": "sim-key",
        }
        args = ("flow", "test", "-c", str(EXAMPLE), "--source", "helpdesk", str(BUG))
        code, out, err = await hookstream(*args, "--call-model", "--timeout-s", "2", env=env)
    assert (code, out) == (3, "")
    lines = err.splitlines()
    assert lines[-1] == (
        "hookstream: no answer within 2 s (--timeout-s): the model or a lookup is down or "
        "slow; the worker would wait for it, pausing the flow"
    )
    # Before it, the flow's outage gate says why, as the worker's log would.
    assert "provider default: HTTP 500" in lines[0]
    assert "pausing, next try in" in lines[0]
