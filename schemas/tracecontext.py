"""W3C Trace Context: the ``traceparent``/``tracestate`` a webhook's trace travels by.

One webhook is one trace, from the sender's HTTP request to the last sink's. The gateway
continues the sender's ``traceparent`` (or starts a trace), writes it as a Kafka record header
on the events record, and every stage carries it to the records it writes (enriched, results,
receipts, dead letters; redrives and replays copy the record's headers) and sends it on every
outgoing lookup, model and sink request. This module is the pure part: parsing and formatting
per the W3C Trace Context recommendation, and the context of the event the current task is
handling (a :mod:`contextvars` variable, like :mod:`streams.logs`'s ids). Spans, when
OpenTelemetry is configured, are :mod:`streams.metrics.tracing`'s; without them a hop passes
the context on unchanged (the parent id is then the sender's, or the one the gateway made up),
as any intermediary that records nothing does.

Parsing follows https://www.w3.org/TR/trace-context/: ``version-traceid-parentid-flags`` in
lower-case hex; version ``ff`` and all-zero ids are invalid; version ``00`` is exactly 55
characters, a later version at least that, with ``-`` after the flags (its extra fields are
dropped when the context is sent on as ``00``). An invalid ``traceparent`` starts a new trace and
its ``tracestate`` is ignored; a ``tracestate`` that breaks the list syntax (more than 32
members, a key twice, a malformed member) is dropped and the ``traceparent`` kept.

The trace id of an event is its CloudEvent's ``traceid`` (:class:`schemas.events.CloudEvent`):
the gateway writes the same id in both. A record without the header (another producer's, or one
written before hookstream carried it) gets its context from the event: its ``traceid`` when that
is a W3C trace id, a hash of it when it is some other text, a hash of ``source/id`` when it has
none (what :class:`~schemas.events.CloudEvent` fills in).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable
from contextvars import ContextVar, Token
from typing import Final, NamedTuple

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
SAMPLED: Final = 0x01

_HEX = frozenset("0123456789abcdef")
# version-traceid-parentid-flags, and what a later version may add after a dash.
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z", re.S
)
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
# A request id that is a UUID (any case, with or without dashes) names a trace.
_UUID = re.compile(r"^[0-9a-f]{8}(-?)[0-9a-f]{4}\1[0-9a-f]{4}\1[0-9a-f]{4}\1[0-9a-f]{12}$", re.I)
# tracestate list members (W3C Trace Context, section 3.3.1.3).
_STATE_KEY = r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_STATE_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_STATE_MEMBER = re.compile(rf"^({_STATE_KEY})=({_STATE_VALUE})$")
_MAX_STATE_MEMBERS: Final = 32
_FLAGS = tuple(f"-{flags:02x}" for flags in range(256))
# A trace id needs to be unique, not secret: the PRNG, not a getrandom() system call per event.
_random_bits = random.getrandbits


class TraceContext(NamedTuple):
    """One hop's trace context: the trace, the caller's span (``parent-id``), the flags and
    the vendors' ``tracestate`` (kept as received, None when absent or dropped)."""

    trace_id: str
    span_id: str
    flags: int = SAMPLED
    state: str | None = None

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def traceparent(self) -> str:
        return "00-" + self.trace_id + "-" + self.span_id + _FLAGS[self.flags & 0xFF]

    def headers(self) -> list[tuple[str, bytes]]:
        """As Kafka record headers (``traceparent``, and ``tracestate`` when there is one)."""
        pairs = [(TRACEPARENT, self.traceparent().encode())]
        if self.state:
            pairs.append((TRACESTATE, self.state.encode()))
        return pairs


def _is_hex(text: str) -> bool:
    return _HEX.issuperset(text)


def new_span_id() -> str:
    return f"{_random_bits(64) or 1:016x}"


def new_trace_id() -> str:
    return f"{_random_bits(128) or 1:032x}"


def new_trace() -> TraceContext:
    """A trace this hop starts, marked sampled so that the services it calls record their
    part (hookstream has no sampling decision of its own without OpenTelemetry)."""
    return TraceContext(new_trace_id(), new_span_id())


def parse_traceparent(value: str | bytes | None) -> TraceContext | None:
    """The context of a ``traceparent`` value, or None when it is absent or invalid."""
    if value is None:
        return None
    if not isinstance(value, str):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    found = _TRACEPARENT.match(value.strip(" \t"))
    if found is None:
        return None
    version, trace_id, span_id, flags, rest = found.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if rest and version == "00":  # version 00 is exactly 55 characters
        return None
    return TraceContext(trace_id, span_id, int(flags, 16))


def parse_tracestate(values: Iterable[str | bytes]) -> str | None:
    """The ``tracestate`` list (several header values join with commas), or None when it is
    empty or invalid (then it is dropped, the ``traceparent`` kept)."""
    members: list[str] = []
    keys: set[str] = set()
    for raw in values:
        try:
            text = raw.decode("ascii") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            return None
        for part in text.split(","):
            member = part.strip(" \t")
            if not member:
                continue
            matched = _STATE_MEMBER.match(member)
            if matched is None or matched.group(1) in keys:
                return None
            keys.add(matched.group(1))
            members.append(member)
    if not members or len(members) > _MAX_STATE_MEMBERS:
        return None
    return ",".join(members)


def parse(
    traceparent: str | bytes | None, tracestate: Iterable[str | bytes] = ()
) -> TraceContext | None:
    """The context of a ``traceparent`` and its ``tracestate`` values; None when the
    ``traceparent`` is absent or invalid (its ``tracestate`` is then not even read)."""
    context = parse_traceparent(traceparent)
    if context is None:
        return None
    state = parse_tracestate(tracestate)
    return context if state is None else context._replace(state=state)


def from_headers(pairs: Iterable[tuple[str, bytes | None]]) -> TraceContext | None:
    """The context of a Kafka record's headers; None without a valid ``traceparent``. Two
    ``traceparent`` headers are invalid, as the spec says of HTTP."""
    parent: bytes | None = None
    states: list[bytes] | None = None
    for name, value in pairs:
        if name == TRACEPARENT:
            if parent is not None:
                return None
            parent = value or b""
        elif name == TRACESTATE and value:
            states = [value] if states is None else [*states, value]
    if parent is None:
        return None
    context = parse_traceparent(parent)
    if context is None or states is None:
        return context
    state = parse_tracestate(states)
    return context if state is None else context._replace(state=state)


def trace_id_of(text: str) -> str:
    """A W3C trace id for an event's ``traceid``: itself when it is one (32 lower-case hex,
    not all zero; a UUID's hex digits too), else the first 128 bits of its SHA-256."""
    if len(text) == 32 and _is_hex(text) and text != _ZERO_TRACE:
        return text
    from_request = request_trace_id(text)
    if from_request is not None:
        return from_request
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def derived_trace_id(source: str, event_id: str) -> str:
    """The trace id of an event that names none: the same on every redo of the event."""
    return hashlib.sha256(f"{source}/{event_id}".encode()).hexdigest()[:32]


def request_trace_id(request_id: str | None) -> str | None:
    """The trace id an ``X-Request-Id`` names: a UUID, or 32 hex digits, as lower-case hex;
    None for any other request id (it does not name a trace; forward the header with
    ``gateway.forwarded_headers`` to keep it)."""
    if not request_id or _UUID.match(request_id) is None:
        return None
    trace_id = request_id.replace("-", "").lower()
    return None if trace_id == _ZERO_TRACE else trace_id


def for_trace_id(trace_id: str) -> TraceContext:
    """A context in the trace ``trace_id`` (already a W3C trace id) with a new parent id:
    for a record that carries its trace only in its value."""
    return TraceContext(trace_id, new_span_id())


_CURRENT: ContextVar[TraceContext | None] = ContextVar("hookstream_trace", default=None)


def current() -> TraceContext | None:
    """The context of the event the current task handles (the innermost span's, when spans
    are on), or None outside one."""
    return _CURRENT.get()


def activate(context: TraceContext | None) -> Token[TraceContext | None]:
    """``context`` is the current one until :func:`restore` of the returned token."""
    return _CURRENT.set(context)


def restore(token: Token[TraceContext | None]) -> None:
    _CURRENT.reset(token)


def current_headers() -> list[tuple[str, bytes]]:
    """The current context as record headers; none outside an event."""
    context = _CURRENT.get()
    return [] if context is None else context.headers()
