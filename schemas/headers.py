"""Kafka header markers that travel with a record through the pipeline.

- ``hookstream-replay``: set by ``hookstream replay`` on every re-injected record (value: the
  replay id). Stages copy it from input to output (events → enriched → results), so a sink
  can tell a replayed result from a live one (``deliver_replays``) and the AI stage can prefer
  its cache.
- ``hookstream-redriven``: set by ``hookstream dlq redrive`` (value: the DLQ coordinates
  ``<partition>:<offset>``); informational, not carried further.
- ``hookstream-flow``: on a dead letter of a flow's event (value: the flow's name), so that the
  DLQ tools filter and redrive by flow.
- ``traceparent`` / ``tracestate``: the W3C trace context of the webhook
  (:mod:`schemas.tracecontext`), set by the gateway on the events record and written by every
  stage on each record it produces (enriched, results, receipts, dead letters); redrive and
  replay copy them with the record's other headers, so a redriven or replayed event stays in
  its webhook's trace.

Only these names are shared between stages; the values are opaque to everyone but the tool that
set them (the trace context's are the W3C format's).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.tracecontext import TRACEPARENT, TRACESTATE, current_headers, from_headers

REPLAY_HEADER = "hookstream-replay"
REDRIVEN_HEADER = "hookstream-redriven"
FLOW_HEADER = "hookstream-flow"
CARRIED_HEADERS = (REPLAY_HEADER,)
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)


def _pairs(message: Any) -> Iterable[tuple[str, bytes]]:
    headers = getattr(message, "headers", None) or ()
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def flow_headers(flow: str) -> list[tuple[str, bytes]]:
    """The headers naming ``flow`` on a dead letter of one of its events."""
    return [(FLOW_HEADER, flow.encode())]


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
    """The headers a stage copies from its input record to each record it produces, with the
    trace context (:func:`trace_headers`)."""
    pairs = _pairs(message)
    carried = [(k, bytes(v)) for k, v in pairs if k in CARRIED_HEADERS and v is not None]
    return carried + _trace_headers(pairs)


def trace_headers(message: Any) -> list[tuple[str, bytes]]:
    """The trace context to write on a record derived from ``message``: the current one (the
    stage's span, when spans are on; :func:`schemas.tracecontext.current`), else the input
    record's own valid ``traceparent`` with its ``tracestate``."""
    return _trace_headers(_pairs(message))


def _trace_headers(pairs: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    current = current_headers()
    if current:
        return current
    found = from_headers((k, bytes(v)) for k, v in pairs if k in TRACE_HEADERS and v is not None)
    return [] if found is None else found.headers()


def replay_suffix(replay: str | None) -> str:
    """What a replayed record's dedupe markers add to the live ones (``/replay/<id>``): each
    replay runs once per event, and never collides with the live run's markers."""
    return "" if replay is None else f"/replay/{replay}"
