"""Log lines as text or JSON, and the event each line is about.

Every ``hookstream`` command sets its logging up here (:func:`configure`, called by
:mod:`streams.cli.main`), from ``--log-format text|json`` or ``$HOOKSTREAM_LOG_FORMAT`` (in text
mode the operator commands and the simulators keep their own defaults):

- ``text`` (the default): ``time LEVEL logger: message``, as before;
- ``json``: one object per line, for a log collector (Loki, Elasticsearch, CloudWatch)::

    {"time": "2026-12-07T01:02:03.456Z", "level": "WARNING", "logger": "agents.emit",
     "message": "dead-lettering …", "role": "worker", "event_id": "…", "trace_id": "…",
     "source": "helpdesk", "flow": "triage", "stage": "ai", "topic": "…", "partition": 0,
     "offset": 17}

  with ``exception`` (the formatted traceback, one string) when there is one. In JSON mode
  nothing else reaches stderr as free text: a line printed there (a one-line failure, a
  config problem, a stray ``print`` in a library) becomes a record of logger ``stderr``, an
  uncaught exception one record with its traceback, and Python's warnings records of
  ``py.warnings``. The services' stdout is treated alike; an operator command's stdout stays
  its output (``tail`` prints records there).

Which event a line is about travels in a :mod:`contextvars` variable instead of each call's
arguments: :class:`agents.stages.runner.OrderedRunner` runs every event in its own task and
binds the Kafka record there (:func:`bind_record`); the stage binds the decoded event once it
has it (:func:`bind_event`). Each stores one small tuple of the ids; nothing is formatted
unless a line is written (bench/results/logs.md: the cost per event). A task started while an
event is handled inherits its context, which is right for work done for that event (a model
call) and means "started by" for shared work (a sink's batch). The gateway answers from
callbacks, not a task per webhook: it passes the ids as ``extra`` fields.

Secrets: the config holds them as ``SecretStr`` and no log call formats one; this module adds
only the fields above (tests/integration/test_json_logs.py checks a failing start at debug).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, TextIO

import orjson

if TYPE_CHECKING:
    from types import TracebackType

LOG_FORMAT_ENV: Final = "HOOKSTREAM_LOG_FORMAT"
LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Fields a call may pass as ``extra`` (the gateway does); they win over the context's.
EXTRA_FIELDS: Final = ("event_id", "trace_id", "source", "flow", "stage")


def default_format() -> str:
    """``$HOOKSTREAM_LOG_FORMAT``, else ``text``. argparse does not check a default against
    the option's choices: the command refuses an unknown value itself (exit 2)."""
    return os.environ.get(LOG_FORMAT_ENV, "text").strip().lower() or "text"


#: What the current task is handling, as one plain tuple of strings and numbers (named by
#: CONTEXT_FIELDS), copied when bound. Not the decoded event itself: a context lives as long
#: as its task, which the cyclic garbage collector frees, and pydantic models kept alive that
#: long slowed the runner's path by about a third (41,000 against 66,000 events/s in one run of
#: bench/logs/run.py's runner); strings and ints are not tracked by the collector. A tuple, not
#: a NamedTuple: both binds of an event took 0.5 µs instead of 1.3 µs.
EventContext = tuple[
    str | None, str | None, str | None, str | None, str | None, str | None, int | None, int | None
]
CONTEXT_FIELDS: Final = (
    "event_id",
    "trace_id",
    "source",
    "flow",
    "stage",
    "topic",
    "partition",
    "offset",
)

_CURRENT: ContextVar[EventContext | None] = ContextVar("hookstream_log_event", default=None)


def bind_record(message: Any) -> None:
    """The current task handles this Kafka message (a Faust ``event.message``)."""
    topic = getattr(message, "topic", None)
    partition = getattr(message, "partition", None)
    _CURRENT.set((None, None, None, None, None, topic, partition, getattr(message, "offset", None)))


def bind_event(stage: str, event: Any, flow: str | None = None) -> None:
    """The current task's record, decoded by ``stage``: ``event`` is its CloudEvent."""
    current = _CURRENT.get()
    topic, partition, offset = (None, None, None) if current is None else current[5:]
    _CURRENT.set((event.id, event.traceid, event.source, flow, stage, topic, partition, offset))


def clear() -> None:
    """Lines from here on in this context are about no event (for a long-lived task started
    while one was bound, and for tests)."""
    _CURRENT.set(None)


def current_context() -> EventContext | None:
    return _CURRENT.get()


def context_fields(context: EventContext | None) -> dict[str, Any]:
    """The JSON fields of ``context`` (the ids of its event, its stage and flow, its record's
    place); absent ones are left out."""
    if context is None:
        return {}
    return {
        name: value
        for name, value in zip(CONTEXT_FIELDS, context, strict=True)
        if value is not None
    }


def rfc3339_utc(created_s: float) -> str:
    """``2026-12-07T01:02:03.456Z``: RFC 3339, UTC, milliseconds."""
    whole = int(created_s)
    millis = int((created_s - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring for its fields."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": rfc3339_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "role": self.role,
        }
        line.update(context_fields(_CURRENT.get()))
        given = record.__dict__
        for name in EXTRA_FIELDS:
            value = given.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def formatter(log_format: str, role: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(role)
    return logging.Formatter(TEXT_FORMAT)


class _LinesToLog(io.TextIOBase):
    """A text stream whose every line becomes a log record (JSON mode's stderr and the
    services' stdout), so free text cannot break a one-object-per-line log."""

    def __init__(self, logger: logging.Logger, level: int, original: TextIO) -> None:
        super().__init__()
        self._logger = logger
        self._level = level
        self._original = original
        self._partial = ""
        self._writing = False

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._original.fileno()

    def write(self, text: str) -> int:
        if self._writing:  # a handler's own error report while logging: drop it, no loop
            return len(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        self._writing = True
        try:
            for line in lines:
                if line.strip():
                    self._logger.log(_line_level(line, self._level), "%s", line.rstrip())
        finally:
            self._writing = False
        return len(text)

    def flush(self) -> None:
        if self._partial.strip():
            self.write("\n")
        self._partial = ""


def _line_level(line: str, default: int) -> int:
    """A CLI warning (``hookstream: warning: …``) stays a warning."""
    return logging.WARNING if line.startswith("hookstream: warning:") else default


def _log_uncaught(
    kind: type[BaseException], error: BaseException, tb: TracebackType | None
) -> None:
    logging.getLogger("hookstream").critical(
        "uncaught %s: %s", kind.__name__, error, exc_info=(kind, error, tb)
    )


class _RootHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure` installs (told apart from handlers others installed)."""


def configure(
    log_format: str, *, level: int | str, role: str, capture_stdout: bool = False
) -> logging.Handler:
    """The root logger writes ``log_format`` lines to stderr at ``level``; returns its handler.

    In JSON mode stderr (and stdout with ``capture_stdout``) is replaced by a stream that
    logs each line, uncaught exceptions are logged, and Python's warnings too; the handler
    keeps writing to the real stderr.
    """
    real_stderr = sys.stderr._original if isinstance(sys.stderr, _LinesToLog) else sys.stderr
    handler = _RootHandler(real_stderr)
    handler.setFormatter(formatter(log_format, role))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _RootHandler):  # ours from an earlier call; others stay (pytest's)
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if log_format == "json" and real_stderr is not None:
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        sys.stderr = _LinesToLog(logging.getLogger("stderr"), logging.ERROR, real_stderr)
        if capture_stdout and sys.stdout is not None:
            sys.stdout = _LinesToLog(logging.getLogger("stdout"), logging.INFO, sys.stdout)
    return handler


def level_number(name: str) -> int:
    """Faust's level names (``crit|error|warn|info|debug``) as logging's numbers."""
    named = {"crit": logging.CRITICAL, "warn": logging.WARNING}
    number: int = named.get(name) or logging.getLevelNamesMapping()[name.upper()]
    return number
