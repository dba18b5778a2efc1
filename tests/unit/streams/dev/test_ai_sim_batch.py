"""The AI simulator's batch APIs: which lines fail, what is paid, how a job's status moves."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from streams.dev._simcommon import SimError
from streams.dev.ai_sim_batch import (
    BatchState,
    _advance,
    _Job,
    _openai_files,
    _parse_input,
    _status,
)

SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string"}, "summary": {"type": "string"}},
    "required": ["sentiment", "summary"],
}


def _body(text: str) -> dict[str, Any]:
    return {
        "model": "sim-1",
        "messages": [{"role": "user", "content": text}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}},
    }


def _job(state: BatchState, lines: int, *, latency_s: float = 0.0) -> _Job:
    now = time.monotonic()
    body = [(f"0_{n}", _body(f"the invoice {n} is wrong")) for n in range(lines)]
    job = _Job("openai", f"batch_{lines}", body, now, now + latency_s, state.settings.expire)
    state.jobs[job.id] = job
    return job


def test_failed_lines_are_not_paid_and_invalid_ones_are() -> None:
    state = BatchState()
    state.settings.fail_rate, state.settings.invalid_rate = 0.3, 0.2
    job = _job(state, 200)
    state.process(job)
    assert job.outcomes is not None
    kinds = [kind for kind, _ in job.outcomes.values()]
    errored = kinds.count("errored")
    invalid = sum(
        1
        for kind, body in job.outcomes.values()
        if kind == "succeeded" and body["choices"][0]["message"]["content"] == "{}"
    )
    assert 40 < errored < 80
    assert 20 < invalid < 60
    assert state.paid["openai"] == 200 - errored


def test_which_line_fails_depends_on_its_custom_id_not_on_the_order() -> None:
    first, second = BatchState(), BatchState()
    for state in (first, second):
        state.settings.fail_rate = 0.5
    a, b = _job(first, 50), _job(second, 50)
    b.lines.reverse()
    first.process(a)
    second.process(b)
    assert a.outcomes is not None
    assert b.outcomes is not None
    assert {k: v[0] for k, v in a.outcomes.items()} == {k: v[0] for k, v in b.outcomes.items()}


def test_an_expired_job_answers_nothing_and_costs_nothing() -> None:
    state = BatchState()
    state.settings.expire = True
    job = _job(state, 5)
    _advance(state, job)
    assert _status(job) == "expired"
    outputs, errors = _openai_files(job)
    assert outputs == b""
    codes = {orjson.loads(line)["error"]["code"] for line in errors.splitlines()}
    assert codes == {"batch_expired"}
    assert state.paid["openai"] == 0


def test_an_openai_job_shows_finalizing_once_before_it_completes() -> None:
    state = BatchState()
    job = _job(state, 3)
    seen = []
    for _ in range(3):
        _advance(state, job)
        seen.append(_status(job))
    assert seen == ["finalizing", "completed", "completed"]


def test_an_input_file_with_a_repeated_custom_id_is_refused() -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}
    content = orjson.dumps(line) + b"\n" + orjson.dumps(line)
    with pytest.raises(SimError, match="line 2: custom_id missing or not unique"):
        _parse_input(content)
    with pytest.raises(SimError, match="url /v1/chat/completions"):
        _parse_input(orjson.dumps({**line, "url": "/v1/embeddings"}))
