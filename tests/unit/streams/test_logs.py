"""streams.logs: the JSON formatter, the per-event context, stray text as records, the option."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from streams import logs
from streams.cli.main import build_parser, main
from tests.unit.streams.cli.test_parser import leaves


@pytest.fixture(autouse=True)
def no_event() -> None:
    """decode() in other tests binds events in the test thread's own context."""
    logs.clear()


def record(message: str = "hello %s", *args: object, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("agents.emit", logging.WARNING, __file__, 1, message, args, None)
    made.created = 1_796_605_323.4567  # 2026-12-07T01:02:03.456Z
    made.__dict__.update(extra)
    return made


def as_json(line: str) -> dict[str, Any]:
    value = orjson.loads(line)
    assert isinstance(value, dict)
    return value


def test_a_line_has_time_level_logger_message_and_role() -> None:
    line = as_json(logs.JsonFormatter("worker").format(record("hello %s", "there")))
    assert line == {
        "time": "2026-12-07T01:02:03.456Z",
        "level": "WARNING",
        "logger": "agents.emit",
        "message": "hello there",
        "role": "worker",
    }


def test_an_exception_is_one_string_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("it failed")
        failed.exc_info = sys.exc_info()
    line = as_json(logs.JsonFormatter("sinks").format(failed))
    assert line["message"] == "it failed"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: boom")


def test_extra_fields_are_the_ids_a_caller_passes() -> None:
    given = record(event_id="wh-1", trace_id="abc", source="helpdesk", other="not a field")
    line = as_json(logs.JsonFormatter("gateway").format(given))
    assert (line["event_id"], line["trace_id"], line["source"]) == ("wh-1", "abc", "helpdesk")
    assert "other" not in line


def event(event_id: str) -> SimpleNamespace:
    return SimpleNamespace(id=event_id, traceid=f"trace-{event_id}", source="helpdesk")


def message(offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic="p.enriched", partition=2, offset=offset)


async def test_each_task_logs_its_own_event() -> None:
    """The runner's way: each event in its own task; a line there carries that event's ids,
    while the code that started the tasks stays without."""
    formatter = logs.JsonFormatter("worker")
    both = asyncio.Event()
    started: list[str] = []

    async def handle(number: int) -> dict[str, Any]:
        logs.bind_record(message(number))
        first = as_json(formatter.format(record("before decoding")))
        assert first["offset"] == number
        assert "event_id" not in first
        logs.bind_event("ai", event(f"e{number}"), flow="triage")
        started.append(f"e{number}")
        if len(started) == 2:
            both.set()
        await both.wait()  # both tasks have bound their events before either logs again
        return as_json(formatter.format(record("after")))

    one, two = await asyncio.gather(asyncio.create_task(handle(1)), asyncio.create_task(handle(2)))
    for line, number in ((one, 1), (two, 2)):
        assert line["event_id"] == f"e{number}"
        assert line["trace_id"] == f"trace-e{number}"
        assert (line["flow"], line["stage"], line["source"]) == ("triage", "ai", "helpdesk")
        assert (line["topic"], line["partition"], line["offset"]) == ("p.enriched", 2, number)
    assert logs.current_context() is None
    assert "event_id" not in as_json(formatter.format(record("outside")))


def test_text_lines_stay_as_they_were() -> None:
    line = logs.formatter("text", "worker").format(record("hello %s", "there"))
    assert line.endswith(" WARNING agents.emit: hello there")


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stdout, stderr, hook = sys.stdout, sys.stderr, sys.excepthook
    try:
        yield
    finally:
        sys.stdout, sys.stderr, sys.excepthook = stdout, stderr, hook
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(level)


def test_json_mode_turns_stray_text_into_records(restored_logging: None) -> None:
    real = io.StringIO()
    sys.stderr = real
    sys.stdout = io.StringIO()
    logs.configure("json", level=logging.INFO, role="worker", capture_stdout=True)
    print("hookstream: the config file has 1 problem(s):", file=sys.stderr)
    print("hookstream: warning: kafka.security_protocol: PLAINTEXT", file=sys.stderr)
    sys.stdout.write("gateway listening ")
    print("on http://127.0.0.1:8080")
    logging.getLogger("agents.emit").debug("below the level: %s", "not formatted")
    lines = [as_json(line) for line in real.getvalue().splitlines()]
    assert [(line["logger"], line["level"], line["message"]) for line in lines] == [
        ("stderr", "ERROR", "hookstream: the config file has 1 problem(s):"),
        ("stderr", "WARNING", "hookstream: warning: kafka.security_protocol: PLAINTEXT"),
        ("stdout", "INFO", "gateway listening on http://127.0.0.1:8080"),
    ]
    assert {line["role"] for line in lines} == {"worker"}


def test_an_uncaught_exception_is_one_record(restored_logging: None) -> None:
    real = io.StringIO()
    sys.stderr = real
    logs.configure("json", level=logging.INFO, role="gateway")
    try:
        raise RuntimeError("unexpected")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    (line,) = [as_json(text) for text in real.getvalue().splitlines()]
    assert line["level"] == "CRITICAL"
    assert line["message"] == "uncaught RuntimeError: unexpected"
    assert "RuntimeError: unexpected" in line["exception"]


def test_every_command_takes_log_format() -> None:
    commands = list(leaves(build_parser()))
    assert len(commands) > 10
    for words, parser in commands:
        options = {o for action in parser._actions for o in action.option_strings}
        assert "--log-format" in options, " ".join(words)


def test_the_environment_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "json")
    assert build_parser().parse_args(["tail", "results"]).log_format == "json"
    assert build_parser().parse_args(["worker", "--log-format", "text"]).log_format == "text"


def test_an_unknown_format_in_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(logs.LOG_FORMAT_ENV, "yaml")
    with pytest.raises(SystemExit) as exited:
        main(["schemas", "export", "/nonexistent"])
    assert exited.value.code == 2
    assert "$HOOKSTREAM_LOG_FORMAT='yaml': not a log format" in capsys.readouterr().err
