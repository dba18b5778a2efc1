"""Flow tests declared in YAML next to the flows, run by ``hookstream flow test --all``.

A tests file (default: ``<flows file stem>.tests.yaml`` beside the flows file)::

    tests:
      - name: a bug report updates the CRM
        source: helpdesk
        event_file: webhooks/helpdesk-02-bug.json   # or event: {...}, the body inline
        headers: {X-Webhook-Id: wh-0002}             # optional: the request's headers
        lookups: {customer: {name: Ada}}             # optional: each lookup's answer
        answer: {sentiment: negative, ...}           # the model's answer (a mapping or text)
        reask_answer: ...                            # optional: the answer to the re-ask
        expect:                                      # matched against the --json report
          matched: [feedback-triage]
          flows: {feedback-triage: {sinks: {crm: {method: PUT, body: {...}}}}}

``expect`` is a partial match: a mapping checks only the keys it names (at any depth), a list
checks its length and each item, anything else must be equal (``null`` included). A test that
does not match prints each difference with its path in the report.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.errors import ToolError
from streams.cli.flowtest_run import FlowInput, FlowTester

_LONGEST_SHOWN_CHARS = 200


class FlowTest(BaseModel):
    """One test: a webhook, the answers it gets, and what the report must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    source: str = Field(min_length=1)
    event: Any = None
    event_file: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    time: datetime | None = None
    lookups: dict[str, Any] = Field(default_factory=dict)
    answer: Any = None
    reask_answer: Any = None
    expect: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_event(self) -> FlowTest:
        if (self.event is None) == (self.event_file is None):
            raise ValueError("give the webhook body as event or event_file (one of them)")
        return self


class TestsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tests: list[FlowTest] = Field(min_length=1)


def default_tests_path(config_path: str) -> Path:
    """``examples/flows.yaml`` → ``examples/flows.tests.yaml``."""
    path = Path(config_path)
    return path.with_name(f"{path.stem}.tests.yaml")


def load_tests(path: Path) -> list[FlowTest]:
    """The file's tests; a problem is a :class:`ToolError` naming the file and the field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ToolError(f"{path}: cannot read the tests file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        reason = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ToolError(f"{where}: not YAML: {reason}") from None
    try:
        return TestsFile.model_validate(data).tests
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"])
        where = where.replace(".[", "[")
        raise ToolError(f"{path}: {where or 'the file'}: {first['msg']}") from None


def answer_text(answer: Any) -> str:
    """A mapping (or list) is sent as its JSON; a string is the model's text as it is."""
    return answer if isinstance(answer, str) else orjson.dumps(answer).decode()


def read_json_file(path: Path, *, what: str) -> tuple[bytes, Any]:
    """A JSON file's bytes and value; a problem is a :class:`ToolError` naming the file."""
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise ToolError(f"{what} {path}: cannot read it: {exc.strerror}") from None
    try:
        return body, orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ToolError(f"{what} {path}: not JSON: {exc}") from None


def flow_input(test: FlowTest, base: Path) -> FlowInput:
    """The run a test describes; ``event_file`` is relative to the tests file's folder."""
    if test.event_file is not None:
        body, payload = read_json_file(base / test.event_file, what=f"test {test.name!r}: event")
    else:
        body, payload = orjson.dumps(test.event), test.event
    answers = [answer_text(a) for a in (test.answer, test.reask_answer) if a is not None]
    return FlowInput(
        source=test.source,
        body=body,
        payload=payload,
        headers=test.headers,
        received_at=test.time,
        lookups=test.lookups,
        answers=answers,
        answers_from="the test",
    )


def _shown(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode()
    if len(text) > _LONGEST_SHOWN_CHARS:
        text = text[: _LONGEST_SHOWN_CHARS - 3] + "..."
    return text


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` differs from ``expected`` (a partial match), one line each."""
    at = path or "(the report)"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{at}: expected {_shown(expected)}, got {_shown(actual)}"]
        found: list[str] = []
        for key, value in expected.items():
            inner = f"{path}.{key}" if path else str(key)
            if key not in actual:
                found.append(f"{inner}: expected {_shown(value)}, got nothing")
            else:
                found += differences(value, actual[key], inner)
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{at}: expected {_shown(expected)}, got {_shown(actual)}"]
        found = []
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            found += differences(want, got, f"{path}[{index}]")
        return found
    # 1 == True and 1 == 1.0 in Python; JSON tells them apart.
    if expected != actual or isinstance(expected, bool) != isinstance(actual, bool):
        return [f"{at}: expected {_shown(expected)}, got {_shown(actual)}"]
    return []


async def run_tests(
    tester: FlowTester, tests: list[FlowTest], base: Path
) -> list[tuple[FlowTest, list[str]]]:
    """Each test with its differences (none: it passed)."""
    outcomes = []
    for test in tests:
        try:
            report = await tester.run(flow_input(test, base))
        except ToolError as exc:
            outcomes.append((test, [f"cannot run: {exc}"]))
            continue
        outcomes.append((test, differences(test.expect, report)))
    return outcomes
