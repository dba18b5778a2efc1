"""A stage handler runs in its record's trace (agents.stages.base.traced): the context of the
record's ``traceparent`` (or of its event's ``traceid``) is current while it runs, its outgoing
requests carry it (agents.outbound.http), and with spans on it runs in a consumer span that is the
record context's child."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents.outbound.http import new_session, request_json
from agents.stages.base import Stage, record_trace, traced
from schemas import tracecontext
from schemas.tracecontext import TraceContext, derived_trace_id, trace_id_of
from tests.support.spans import exporting

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
SENT = f"00-{TRACE}-{SPAN}-01".encode()
EVENT = {"specversion": "1.0", "id": "wh-1", "source": "helpdesk", "type": "ticket.created"}


@dataclass
class Message:
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    topic: str = "p.events"
    partition: int = 3
    offset: int = 17
    key: bytes | None = None
    timestamp: float | None = None


@dataclass
class Event:
    message: Message


class Recorder(Stage):
    """A stage whose handler notes the context it ran in (no config needed for that)."""

    name = "enrich"

    def __init__(self) -> None:
        self.seen: list[TraceContext | None] = []

    @traced
    async def handle(self, event: Any) -> None:
        self.seen.append(tracecontext.current())


def test_the_header_names_the_trace() -> None:
    message = Message(orjson.dumps({**EVENT, "traceid": "a" * 32}), [("traceparent", SENT)])
    assert record_trace(message) == TraceContext(TRACE, SPAN, 1, None)


@pytest.mark.parametrize(
    ("value", "trace_id"),
    [
        ({**EVENT, "traceid": TRACE}, TRACE),
        ({**EVENT, "traceid": "req-1"}, trace_id_of("req-1")),
        (EVENT, derived_trace_id("helpdesk", "wh-1")),  # what CloudEvent fills in
        ({"flow": "f", "event": {**EVENT, "traceid": TRACE}}, TRACE),  # enriched, results
    ],
)
def test_without_the_header_the_event_names_the_trace(value: Any, trace_id: str) -> None:
    context = record_trace(Message(orjson.dumps(value)))
    assert context.trace_id == trace_id
    assert tracecontext.parse_traceparent(context.traceparent()) == context


def test_a_binary_mode_event_names_its_trace_in_its_header() -> None:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"wh-1"),
        ("ce_source", b"helpdesk"),
        ("ce_type", b"t"),
        ("ce_traceid", TRACE.encode()),
    ]
    assert record_trace(Message(b"{}", headers)).trace_id == TRACE


def test_a_record_that_is_not_json_still_gets_a_trace() -> None:
    context = record_trace(Message(b"\xff not json"))
    assert tracecontext.parse_traceparent(context.traceparent()) == context


async def test_the_handler_runs_in_the_records_context_and_leaves_none_behind() -> None:
    stage = Recorder()
    await stage.handle(Event(Message(orjson.dumps(EVENT), [("traceparent", SENT)])))
    assert stage.seen == [TraceContext(TRACE, SPAN, 1, None)]
    assert tracecontext.current() is None


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    with exporting("worker") as exporter:
        yield exporter


async def test_with_spans_the_handler_runs_in_a_child_span(
    exported: InMemorySpanExporter,
) -> None:
    stage = Recorder()
    await stage.handle(Event(Message(orjson.dumps(EVENT), [("traceparent", SENT)])))
    (span,) = exported.get_finished_spans()
    (seen,) = stage.seen
    assert seen is not None
    assert span.name == "process p.events"
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == SPAN
    assert span.context is not None
    assert (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}") == (
        TRACE,
        seen.span_id,
    )
    assert span.attributes == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": "p.events",
        "messaging.destination.partition.id": "3",
        "messaging.kafka.offset": 17,
        "hookstream.stage": "enrich",
    }


@pytest_asyncio.fixture
async def echo_url() -> AsyncIterator[str]:
    """A server answering with the trace headers it received."""

    async def echo(request: web.Request) -> web.Response:
        seen = {name: request.headers.get(name) for name in ("traceparent", "tracestate")}
        return web.json_response(seen)

    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def _get(url: str) -> Any:
    async with new_session() as session:
        _, body = await request_json(session, "GET", url, stage="enrich", what="x", timeout_s=5)
    return body


async def test_an_outgoing_request_carries_the_current_context(echo_url: str) -> None:
    assert await _get(echo_url) == {"traceparent": None, "tracestate": None}
    token = tracecontext.activate(TraceContext(TRACE, SPAN, 1, "a=1"))
    try:
        assert await _get(echo_url) == {"traceparent": SENT.decode(), "tracestate": "a=1"}
        # Two concurrent calls in two contexts: each carries its own.
        other = TraceContext("b" * 32, SPAN)

        async def in_other() -> Any:
            tracecontext.activate(other)
            return await _get(echo_url)

        mine, theirs = await asyncio.gather(_get(echo_url), asyncio.create_task(in_other()))
    finally:
        tracecontext.restore(token)
    assert mine["traceparent"] == SENT.decode()
    assert theirs["traceparent"] == other.traceparent()


async def test_a_record_whose_context_cannot_be_read_is_still_handled() -> None:
    """A bug reading the context must not hold the partition: the event runs in a new trace."""
    stage = Recorder()
    broken = Message(orjson.dumps(EVENT))
    broken.headers = [("traceparent",)]  # type: ignore[list-item]  # not a (name, value) pair
    await stage.handle(Event(broken))
    (seen,) = stage.seen
    assert seen is not None
    assert tracecontext.parse_traceparent(seen.traceparent()) == seen
