"""JSON logs from real processes: every line each process writes is one JSON object.

The gateway, the worker and the sink worker run on the real broker with
``HOOKSTREAM_LOG_FORMAT=json`` (the variable the Helm chart and compose set once); the AI
simulator answers every call with malformed JSON, so the webhook's event is dead-lettered by the
AI stage and the worker logs a warning about it. That line, and the gateway's accepted line,
must carry the event's id and trace id (the ``X-Request-Id`` sent), the dead letter's the flow
and stage: the runner and the stage bound them in the event's task, no call site passed them.
Faust's lines and the gateway's "listening on" print go through the same formatter.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.support.broker import free_port
from tests.support.kafka import wait_for_records
from tests.support.stack import EXAMPLE_CONFIG, REPO_ROOT, SECRETS, Stack, running_stack


def json_lines(text: str, process: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object; a line that is not one fails, naming it."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"{process} line {number} is not JSON: {line!r}")
        assert isinstance(value, dict), f"{process} line {number} is not an object: {line!r}"
        for field in ("time", "level", "logger", "message", "role"):
            assert field in value, f"{process} line {number} has no {field}: {line!r}"
        assert value["time"].endswith("Z"), value["time"]
        lines.append(value)
    return lines


def config_logging_accepted(workdir: Path) -> Path:
    """The example config with ``gateway.log_accepted: info``."""
    document = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    document.setdefault("gateway", {})["log_accepted"] = "info"
    path = workdir / "flows.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


async def test_every_line_is_json_and_names_the_event(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = config_logging_accepted(tmp_path)
    env = {"HOOKSTREAM_LOG_FORMAT": "json"}
    knobs = {"rate_malformed": 1.0}
    async with running_stack(
        kafka_bootstrap, tmp_path, config_path=config, extra_env=env, ai_knobs=knobs
    ) as stack:
        event_id, trace_id = await _post_and_wait_for_dead_letter(stack)
        # Stopped before reading the logs: the shutdown lines are checked too.
        for proc in stack.procs.values():
            await proc.stop()
        logs = {name: proc.log_text() for name, proc in stack.procs.items()}

    parsed = {name: json_lines(text, name) for name, text in logs.items()}
    for name, lines in parsed.items():
        assert {line["role"] for line in lines} == {name}
    # Faust's own lines are among them (its formatter would draw tables: ours does not).
    assert any(line["logger"].startswith("faust") for line in parsed["worker"])
    assert any("[^Worker]: Ready" in line["message"] for line in parsed["sinks"])

    accepted = [line for line in parsed["gateway"] if line.get("event_id") == event_id]
    assert accepted, "the gateway logged no line about the event"
    assert accepted[0]["message"].startswith("accepted helpdesk/")
    assert accepted[0]["trace_id"] == trace_id
    assert accepted[0]["source"] == "helpdesk"

    dead = [
        line
        for line in parsed["worker"]
        if line.get("event_id") == event_id and "dead-lettering" in line["message"]
    ]
    assert dead, "the worker logged no dead letter about the event"
    assert dead[0]["level"] == "WARNING"
    assert dead[0]["trace_id"] == trace_id
    assert dead[0]["flow"] == "feedback-triage"
    assert dead[0]["stage"] == "ai"
    assert dead[0]["topic"] == stack.topic("enriched")


async def _post_and_wait_for_dead_letter(stack: Stack) -> tuple[str, str]:
    webhook_id = f"wh-{uuid.uuid4().hex[:12]}"
    trace_id = uuid.uuid4().hex
    payload = {
        "event": "ticket.created",
        "ticket_id": "T-1",
        "customer_id": "cus_json_logs",
        "message": "The export is broken.",
    }
    status, answer, _ = await stack.post(
        "helpdesk", payload, webhook_id=webhook_id, headers={"X-Request-Id": trace_id}
    )
    assert status == 202, answer
    event_id = answer["id"]
    await wait_for_records(
        stack.bootstrap,
        stack.topic("dlq"),
        lambda records: any(event_id.encode() in (r.value or b"") for r in records),
        timeout_s=90,
    )
    return event_id, trace_id


async def test_a_failing_start_logs_json_without_the_secrets(tmp_path: Path) -> None:
    """A worker that cannot reach Kafka, at debug, with every secret set: its output is JSON
    lines, the failure is among them, and no secret's value is anywhere in it."""
    secrets = {name: f"s3cret-{name.lower()}-{uuid.uuid4().hex}" for name in SECRETS}
    env = {
        **os.environ,
        **secrets,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "HOOKSTREAM_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("HOOKSTREAM_LOG_FORMAT", None)
    for role in ("worker", "gateway"):
        args = ["-c", str(EXAMPLE_CONFIG), "-l", "debug", "--log-format", "json"]
        if role == "worker":
            args += ["--wait-for-broker-s", "0"]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streams.cli.main",
            role,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 120)
        text = output.decode()
        assert process.returncode not in (0, None), text
        lines = json_lines(text, role)
        assert any(line["level"] in ("ERROR", "CRITICAL") for line in lines), text
        for name, value in secrets.items():
            assert value not in text, f"{role} logged ${name}"
