"""Spans only when configured (streams.metrics.tracing): off, nothing of OpenTelemetry is even
imported; on, spans nest through schemas.tracecontext's current context."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from schemas import tracecontext
from schemas.tracecontext import TraceContext
from streams.metrics import tracing
from tests.support.stack import REPO_ROOT

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.setup("worker", {}, exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def _ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    context = span.context
    assert context is not None
    parent = None if span.parent is None else f"{span.parent.span_id:016x}"
    return f"{context.trace_id:032x}", f"{context.span_id:016x}", parent


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
    ],
)
def test_spans_are_on_only_with_an_endpoint(environ: dict[str, str], expected: bool) -> None:
    assert tracing.configured(environ) is expected


def test_off_nothing_of_opentelemetry_is_imported() -> None:
    """A service without the variables: its modules loaded, setup run, a span entered."""
    code = (
        "import sys\n"
        "import streams.cli.main, streams.gateway.routes\n"
        "import agents.stages.enrich, agents.stages.ai, agents.sinks.stage\n"
        "from streams.metrics import tracing\n"
        "assert not tracing.setup('worker', {})\n"
        "with tracing.span('x') as span:\n"
        "    assert span is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_off_a_span_is_the_shared_no_op() -> None:
    assert not tracing.enabled()
    assert tracing.span("a") is tracing.span("b") is tracing.OFF
    tracing.set_attributes({"a": 1})  # nothing to set it on, no error


def test_spans_nest_and_their_context_is_current(exported: InMemorySpanExporter) -> None:
    sender = TraceContext(TRACE, SPAN, 1, "vendor=1")
    token = tracecontext.activate(sender)
    try:
        with tracing.span("outer", kind="consumer", attributes={"k": "v"}):
            outer = tracecontext.current()
            assert outer is not None
            assert (outer.trace_id, outer.state) == (TRACE, "vendor=1")
            assert outer.span_id != SPAN
            with tracing.span("inner", kind="client"):
                inner = tracecontext.current()
                tracing.set_attributes({"late": 7})
            assert tracecontext.current() == outer
        assert tracecontext.current() == sender
    finally:
        tracecontext.restore(token)
    finished = {span.name: span for span in exported.get_finished_spans()}
    assert _ids(finished["outer"]) == (TRACE, outer.span_id, SPAN)
    assert inner is not None
    assert _ids(finished["inner"]) == (TRACE, inner.span_id, outer.span_id)
    assert finished["inner"].attributes == {"late": 7}
    assert finished["outer"].attributes == {"k": "v"}
    assert finished["outer"].resource.attributes["service.name"] == "hookstream-worker"
    assert finished["outer"].resource.attributes["hookstream.role"] == "worker"


def test_a_failure_marks_the_span(exported: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="broken"), tracing.span("failing"):
        raise ValueError("broken")
    (span,) = exported.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "broken"
    assert span.attributes == {"error.type": "ValueError"}


def test_a_root_span_takes_the_trace_id_it_is_given(exported: InMemorySpanExporter) -> None:
    named = tracing.start("root", None, kind="server", trace_id=TRACE)
    named.end()
    fresh = tracing.start("root", None, kind="server")
    fresh.end()
    child = tracing.start("child", TraceContext(TRACE, SPAN), trace_id="a" * 32)
    child.end()
    first, second, third = exported.get_finished_spans()
    assert _ids(first)[0] == TRACE
    assert _ids(first)[2] is None
    assert _ids(second)[0] not in (TRACE, "0" * 32)
    assert _ids(third)[0] == TRACE  # a child stays in its parent's trace
    assert _ids(third)[2] == SPAN


def test_an_unsampled_parent_gives_unsampled_children(exported: InMemorySpanExporter) -> None:
    token = tracecontext.activate(TraceContext(TRACE, SPAN, 0))
    try:
        with tracing.span("quiet"):
            context = tracecontext.current()
    finally:
        tracecontext.restore(token)
    assert context is not None
    assert not context.sampled
    assert context.trace_id == TRACE
    assert exported.get_finished_spans() == ()  # parent-based sampling: not recorded


def test_a_sampler_not_following_the_parent_gets_every_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under ``always_on`` a child of an unsampled context is made (and recorded): the
    shortcut that skips it holds only for the parent-based samplers."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    exporter = InMemorySpanExporter()
    tracing.setup("worker", os.environ, exporter=exporter)
    try:
        token = tracecontext.activate(TraceContext(TRACE, SPAN, 0))
        try:
            with tracing.span("recorded anyway"):
                pass
        finally:
            tracecontext.restore(token)
    finally:
        tracing.shutdown()
    (span,) = exporter.get_finished_spans()
    assert _ids(span) == (TRACE, _ids(span)[1], SPAN)
