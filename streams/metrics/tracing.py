"""OpenTelemetry spans, exported over OTLP/HTTP, only when the operator asks for them.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set,
and ``OTEL_SDK_DISABLED`` is not ``true`` and ``OTEL_TRACES_EXPORTER`` not ``none``. Off, the
``opentelemetry`` packages are never imported and no span object is made: :func:`span` returns
one shared object whose ``with`` does nothing, and the hot paths test :func:`enabled` before
building even a span's name. The trace context still travels then (:mod:`schemas.tracecontext`):
spans add ids of their own, nothing else depends on them.

On, each service (``hookstream gateway|worker|sinks``, :func:`setup` from the CLI) has a
``TracerProvider`` with a batching OTLP/HTTP exporter (the ``hookstream[otel]`` extra:
``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp-proto-http``). The SDK reads the rest of
the standard variables itself: ``OTEL_SERVICE_NAME`` (default ``hookstream-<role>``),
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER`` (default
parent-based always-on: a sender's unsampled ``traceparent`` stays unsampled),
``OTEL_BSP_SCHEDULE_DELAY`` and the other batch settings. Configured but not installed: a
warning at start, and no spans.

The current span is not OpenTelemetry's context but :mod:`schemas.tracecontext`'s: a span
starts as a child of :func:`schemas.tracecontext.current` and is current (as a
:class:`~schemas.tracecontext.TraceContext`) inside its ``with``, so the record headers and the
``traceparent`` of outgoing requests name the innermost span without any code asking
OpenTelemetry. Which spans exist, and their attributes: docs/operations.md, "Tracing".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import nullcontext
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal

from schemas import tracecontext
from schemas.tracecontext import TraceContext

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

ENDPOINT_ENVS: Final = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
INSTALL_HINT: Final = "pip install 'hookstream[otel]'"
Kind = Literal["internal", "server", "client", "producer", "consumer"]
Attributes = Mapping[str, str | int | float | bool]

_tracer: Tracer | None = None
_provider: Any = None
# The sampler follows the parent's decision (the default, parentbased_*): a span under an
# unsampled context is then not even made, as the sampler would only drop it.
_parent_based = True
# The innermost span of the current task (for attributes learnt after it started).
_SPAN: ContextVar[Span | None] = ContextVar("hookstream_span", default=None)
# The trace id a root span is to have (a sender's X-Request-Id): read by the id generator.
_ROOT_TRACE_ID: ContextVar[int | None] = ContextVar("hookstream_root_trace_id", default=None)


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Does the environment ask for spans? (An endpoint, and the SDK not disabled.)"""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_ENVS)


def setup(role: str, environ: Mapping[str, str] = os.environ, *, exporter: Any = None) -> bool:
    """Turn spans on for this process when the environment asks; True if they are on.

    ``role`` names the service (``gateway``, ``worker``, ``sinks``): the default
    ``service.name`` is ``hookstream-<role>``, and every span's resource has
    ``hookstream.role``. ``exporter`` (tests): a span exporter that gets each span as it ends,
    instead of the batching OTLP one, whatever the environment says.
    """
    global _tracer, _provider, _parent_based
    if _tracer is not None or (exporter is None and not configured(environ)):
        return _tracer is not None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    except ImportError as exc:
        endpoint = next(name for name in ENDPOINT_ENVS if environ.get(name, "").strip())
        log.warning(
            "$%s is set but OpenTelemetry is not installed (%s): no spans; %s",
            endpoint,
            exc.name,
            INSTALL_HINT,
        )
        return False
    resource = Resource.create({"hookstream.role": role})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"hookstream-{role}"}))

    class _Ids(RandomIdGenerator):
        """Random ids, except a root span's trace id when the caller names it."""

        def generate_trace_id(self) -> int:
            wanted = _ROOT_TRACE_ID.get()
            return wanted if wanted is not None else super().generate_trace_id()

    # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    provider = TracerProvider(
        resource=resource, id_generator=_Ids(), shutdown_on_exit=exporter is None
    )
    if exporter is None:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider = provider
    _tracer = provider.get_tracer("hookstream")
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    _parent_based = not sampler or sampler.startswith("parentbased_")
    log.info(
        "tracing on: spans of service %s exported over OTLP/HTTP",
        resource.attributes.get(SERVICE_NAME),
    )
    return True


def shutdown() -> None:
    """Export what is buffered and turn spans off (tests; a process's exit does it too)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def recording(span: Span) -> bool:
    """Is ``span`` recorded, or, under a parent-based sampler, would its children be?"""
    return not _parent_based or span.is_recording()


# The ``with`` of a span when spans are off: nothing, and no span (``as`` gives None).
OFF: Final = nullcontext()


class ActiveSpan:
    """A started span, current (with its context) until its ``with`` ends; an exception
    leaving it marks it failed with ``error.type``."""

    __slots__ = ("_context_token", "_parent", "_span_token", "span")

    def __init__(self, span: Span, parent: TraceContext | None) -> None:
        self.span = span
        self._parent = parent

    def __enter__(self) -> Span:
        self._context_token = tracecontext.activate(context_of(self.span, self._parent))
        self._span_token = _SPAN.set(self.span)
        return self.span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _SPAN.reset(self._span_token)
        tracecontext.restore(self._context_token)
        if error is not None and isinstance(error, Exception):
            fail(self.span, error)
        self.span.end()


def span(
    name: str, *, kind: Kind = "internal", attributes: Attributes | None = None
) -> ActiveSpan | nullcontext[None]:
    """A child of the current context, current inside its ``with``; :data:`OFF` when spans
    are off (no span object), or when the current context is not sampled and the sampler
    follows the parent's decision (the context then goes on unchanged). Build costly names and
    attributes only after :func:`enabled`."""
    if _tracer is None:
        return OFF
    parent = tracecontext.current()
    if parent is not None and _parent_based and not parent.flags & tracecontext.SAMPLED:
        return OFF
    return ActiveSpan(start(name, parent, kind=kind, attributes=attributes), parent)


def start(
    name: str,
    parent: TraceContext | None,
    *,
    kind: Kind = "internal",
    attributes: Attributes | None = None,
    start_time_ns: int | None = None,
    trace_id: str | None = None,
) -> Span:
    """A span child of ``parent`` (a root span without one, in trace ``trace_id`` when
    given), not made current: for spans that end in a callback (the gateway's). Only while
    :func:`enabled`."""
    from opentelemetry.trace import SpanKind

    assert _tracer is not None  # noqa: S101 - callers check enabled() first
    token = _ROOT_TRACE_ID.set(int(trace_id, 16) if trace_id and parent is None else None)
    try:
        return _tracer.start_span(
            name,
            context=_otel_parent(parent),
            kind=SpanKind[kind.upper()],
            attributes=attributes,
            start_time=start_time_ns,
        )
    finally:
        _ROOT_TRACE_ID.reset(token)


def context_of(span: Span, parent: TraceContext | None = None) -> TraceContext:
    """A span's context as the W3C context to send on (the parent's ``tracestate`` kept)."""
    ids = span.get_span_context()
    state = parent.state if parent is not None else None
    return TraceContext(f"{ids.trace_id:032x}", f"{ids.span_id:016x}", int(ids.trace_flags), state)


def set_attributes(attributes: Attributes) -> None:
    """Attributes on the current task's innermost span (what is learnt once it started)."""
    current = _SPAN.get()
    if current is not None:
        current.set_attributes(attributes)


def fail(span: Span, error: BaseException) -> None:
    """Mark ``span`` failed: status ERROR with the message, ``error.type`` the class name."""
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, str(error)[:500]))


def _otel_parent(parent: TraceContext | None) -> Any:
    """OpenTelemetry's context holding ``parent`` as a remote span (an empty one for a root
    span: never OpenTelemetry's implicit current context, which hookstream does not set)."""
    if parent is None:
        from opentelemetry.context import Context

        return Context()
    from opentelemetry.trace import (
        NonRecordingSpan,
        SpanContext,
        TraceFlags,
        TraceState,
        set_span_in_context,
    )

    state = TraceState.from_header([parent.state]) if parent.state else None
    remote = SpanContext(
        trace_id=int(parent.trace_id, 16),
        span_id=int(parent.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(parent.flags),
        trace_state=state,
    )
    return set_span_in_context(NonRecordingSpan(remote))
