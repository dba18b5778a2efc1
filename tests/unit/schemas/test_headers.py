"""Replay and redrive markers on Kafka/Faust messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.headers import (
    REDRIVEN_HEADER,
    REPLAY_HEADER,
    carried_headers,
    header,
    replay_id,
)


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
