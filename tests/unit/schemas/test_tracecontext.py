"""W3C Trace Context parsing and formatting (schemas.tracecontext), against the spec's rules."""

from __future__ import annotations

import hashlib

import pytest

from schemas import tracecontext
from schemas.tracecontext import (
    TraceContext,
    derived_trace_id,
    from_headers,
    parse,
    parse_traceparent,
    parse_tracestate,
    request_trace_id,
    trace_id_of,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_a_valid_traceparent_gives_its_ids_and_flags() -> None:
    assert parse_traceparent(VALID) == TraceContext(TRACE, SPAN, 1, None)
    assert parse_traceparent(VALID.encode()) == TraceContext(TRACE, SPAN, 1, None)
    unsampled = parse_traceparent(f"00-{TRACE}-{SPAN}-00")
    assert unsampled is not None
    assert not unsampled.sampled
    assert unsampled.traceparent() == f"00-{TRACE}-{SPAN}-00"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00",
        f"00-{TRACE}-{SPAN}",  # no flags
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper-case hex
        f"00-{TRACE}-{SPAN.upper()}-01",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"0g-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-0x",
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 is exactly 55 characters
        f"00-{TRACE}-{SPAN}-011",
        f"00_{TRACE}_{SPAN}_01",
        f"00-{TRACE[:-1]}-{SPAN}0-01",  # fields shifted
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\x00",
    ],
)
def test_an_invalid_traceparent_is_none(value: str) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_is_read_as_00_and_its_extra_fields_dropped() -> None:
    later = parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-comes-next")
    assert later == TraceContext(TRACE, SPAN, 1, None)
    assert later.traceparent() == VALID
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01") == TraceContext(TRACE, SPAN, 1, None)
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01x") is None  # a dash must follow


def test_non_ascii_bytes_are_invalid() -> None:
    assert parse_traceparent(b"\xff" * 55) is None
    assert parse_traceparent(None) is None


def test_tracestate_is_kept_joined_and_dropped_when_invalid() -> None:
    assert parse_tracestate(["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]) == (
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    )
    assert parse_tracestate([" a=1 , , b@vendor=2 "]) == "a=1,b@vendor=2"
    assert parse_tracestate([b"a=1"]) == "a=1"
    assert parse_tracestate([]) is None
    assert parse_tracestate([""]) is None
    assert parse_tracestate(["a=1,a=2"]) is None  # a key twice
    assert parse_tracestate(["A=1"]) is None  # keys are lower case
    assert parse_tracestate(["a=1=2"]) is None  # '=' is not a value character
    assert parse_tracestate(["a"]) is None
    assert parse_tracestate([",".join(f"k{n}=v" for n in range(32))]) is not None
    assert parse_tracestate([",".join(f"k{n}=v" for n in range(33))]) is None


def test_parse_reads_tracestate_only_with_a_valid_traceparent() -> None:
    assert parse(VALID, ["a=1"]) == TraceContext(TRACE, SPAN, 1, "a=1")
    assert parse(VALID, ["A=1"]) == TraceContext(TRACE, SPAN, 1, None)
    assert parse("junk", ["a=1"]) is None


def test_headers_round_trip_and_two_traceparents_are_invalid() -> None:
    context = TraceContext(TRACE, SPAN, 1, "a=1")
    assert context.headers() == [("traceparent", VALID.encode()), ("tracestate", b"a=1")]
    assert from_headers(context.headers()) == context
    assert from_headers([("other", b"x")]) is None
    assert from_headers([("traceparent", VALID.encode())] * 2) is None
    assert TraceContext(TRACE, SPAN).headers() == [("traceparent", VALID.encode())]


def test_a_request_id_names_a_trace_only_when_it_is_a_uuid() -> None:
    uuid_text = "4BF92F35-77B3-4DA6-A3CE-929D0E0E4736"
    assert request_trace_id(uuid_text) == TRACE
    assert request_trace_id(TRACE) == TRACE
    assert request_trace_id("req-1") is None
    assert request_trace_id("4bf92f35-77b34da6a3ce929d0e0e4736") is None  # dashes all or none
    assert request_trace_id("0" * 32) is None
    assert request_trace_id(None) is None


def test_an_events_traceid_becomes_a_trace_id() -> None:
    assert trace_id_of(TRACE) == TRACE
    assert trace_id_of("req-1") == hashlib.sha256(b"req-1").hexdigest()[:32]
    assert trace_id_of("0" * 32) == hashlib.sha256(b"0" * 32).hexdigest()[:32]
    assert (
        derived_trace_id("helpdesk", "wh-1") == (hashlib.sha256(b"helpdesk/wh-1").hexdigest()[:32])
    )


def test_new_traces_are_valid_and_distinct() -> None:
    made = {tracecontext.new_trace() for _ in range(100)}
    assert len({context.trace_id for context in made}) == 100
    for context in made:
        assert parse_traceparent(context.traceparent()) == context
        assert context.sampled


def test_the_current_context_is_set_and_restored() -> None:
    assert tracecontext.current() is None
    assert tracecontext.current_headers() == []
    context = TraceContext(TRACE, SPAN)
    token = tracecontext.activate(context)
    try:
        assert tracecontext.current() == context
        assert tracecontext.current_headers() == context.headers()
    finally:
        tracecontext.restore(token)
    assert tracecontext.current() is None
