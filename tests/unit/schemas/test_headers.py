"""Replay and redrive markers, and the trace context, on Kafka/Faust messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import tracecontext
from schemas.headers import (
    REDRIVEN_HEADER,
    REPLAY_HEADER,
    carried_headers,
    header,
    replay_id,
    trace_headers,
)
from schemas.tracecontext import TraceContext


@dataclass
class Message:
    headers: Any


def test_header_reads_lists_dicts_and_nothing() -> None:
    assert header(Message([("a", b"1"), (REPLAY_HEADER, b"r1")]), REPLAY_HEADER) == b"r1"
    assert header(Message({REPLAY_HEADER: b"r2"}), REPLAY_HEADER) == b"r2"
    assert header(Message(None), REPLAY_HEADER) is None
    assert header(Message([]), REPLAY_HEADER) is None
    assert header(object(), REPLAY_HEADER) is None
    assert header(Message([(REPLAY_HEADER, None)]), REPLAY_HEADER) == b""
    assert header(Message([(REPLAY_HEADER, bytearray(b"x"))]), REPLAY_HEADER) == b"x"


def test_replay_id() -> None:
    assert replay_id(Message([(REPLAY_HEADER, b"abc123")])) == "abc123"
    assert replay_id(Message([(REDRIVEN_HEADER, b"0:5")])) is None
    assert replay_id(Message([])) is None
    assert replay_id(Message([(REPLAY_HEADER, b"\xff")])) == "\ufffd"


def test_only_the_replay_marker_is_carried_to_the_next_topic() -> None:
    message = Message(
        [
            ("traceparent", b"00-abc"),
            (REPLAY_HEADER, b"r1"),
            (REDRIVEN_HEADER, b"0:5"),
            ("hookstream-dlq-stage", b"ai"),
        ]
    )
    assert carried_headers(message) == [(REPLAY_HEADER, b"r1")]
    assert carried_headers(Message(None)) == []
    assert carried_headers(Message({REPLAY_HEADER: b"r3"})) == [(REPLAY_HEADER, b"r3")]
    assert carried_headers(Message([(REPLAY_HEADER, None)])) == []


def test_the_trace_context_is_carried_the_current_one_first() -> None:
    sent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    message = Message([("traceparent", sent), ("tracestate", b"a=1"), (REPLAY_HEADER, b"r1")])
    assert carried_headers(message) == [
        (REPLAY_HEADER, b"r1"),
        ("traceparent", sent),
        ("tracestate", b"a=1"),
    ]
    assert trace_headers(message) == [("traceparent", sent), ("tracestate", b"a=1")]
    # Inside a stage (its span, when spans are on) the current context is written instead.
    stage = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "b7ad6b7169203331", 1, "a=1")
    token = tracecontext.activate(stage)
    try:
        assert trace_headers(message) == stage.headers()
        assert carried_headers(Message([])) == stage.headers()
    finally:
        tracecontext.restore(token)
    assert trace_headers(Message([("traceparent", b"00-bad")])) == []
