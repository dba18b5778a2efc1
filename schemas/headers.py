"""Kafka header markers that travel with a record through the pipeline.

- ``hookstream-replay``: set by ``hookstream replay`` on every re-injected record (value: the
  replay id). Stages copy it from input to output (events → enriched → results), so a sink
  can tell a replayed result from a live one (``deliver_replays``) and the AI stage can prefer
  its cache.
- ``hookstream-redriven``: set by ``hookstream dlq redrive`` (value: the DLQ coordinates
  ``<partition>:<offset>``); informational, not carried further.

Only these names are shared between stages; the values are opaque to everyone but the tool that
set them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

REPLAY_HEADER = "hookstream-replay"
REDRIVEN_HEADER = "hookstream-redriven"
CARRIED_HEADERS = (REPLAY_HEADER,)


def _pairs(message: Any) -> Iterable[tuple[str, bytes]]:
    headers = getattr(message, "headers", None) or ()
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def header(message: Any, name: str) -> bytes | None:
    """The value of header ``name`` on a Kafka/Faust message, or None."""
    for key, value in _pairs(message):
        if key == name:
            return bytes(value) if value is not None else b""
    return None


def replay_id(message: Any) -> str | None:
    """The replay id when ``message`` is a replayed record, else None."""
    value = header(message, REPLAY_HEADER)
    return None if value is None else value.decode(errors="replace")


def carried_headers(message: Any) -> list[tuple[str, bytes]]:
    """The headers a stage copies from its input record to each record it produces."""
    return [(k, bytes(v)) for k, v in _pairs(message) if k in CARRIED_HEADERS and v is not None]


def replay_suffix(replay: str | None) -> str:
    """What a replayed record's dedupe markers add to the live ones (``/replay/<id>``): each
    replay runs once per event, and never collides with the live run's markers."""
    return "" if replay is None else f"/replay/{replay}"
