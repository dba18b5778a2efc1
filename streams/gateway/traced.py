"""The gateway's spans of one webhook, when spans are on (:mod:`streams.metrics.tracing`).

``POST /webhooks/{source}`` (kind server) is the webhook's root in hookstream: a child of the
sender's ``traceparent`` when it sent a valid one, else a root span (in the trace its UUID
``X-Request-Id`` names, if any). Under it ``verify`` (signature and JSON) and ``send <topic>``
(kind producer, from the write's submission to Kafka's acknowledgement); the events record's
``traceparent`` names the ``send`` span, so every stage's span descends from it.

The gateway answers from callbacks, not a task per webhook, so these spans are started and
ended explicitly rather than made current. With spans off none of this runs: the routes take
another branch (:meth:`streams.gateway.routes.Gateway.receive_webhook`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from aiokafka.structs import RecordMetadata

from schemas.config_sources import SourceConfig
from schemas.tracecontext import TraceContext
from streams.gateway.ingest import request_trace, sender_trace
from streams.http.message import Request, Response
from streams.metrics import tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

ROUTE = "/webhooks/{source}"


class WebhookSpans:
    """The spans of one webhook: receive, then verify and send under it."""

    __slots__ = ("_parent", "_recording", "receive", "send")

    def __init__(self, source: SourceConfig, request: Request) -> None:
        headers = request.headers
        self._parent = sender_trace(headers)
        self.receive: Span = tracing.start(
            f"POST {ROUTE}",
            self._parent,
            kind="server",
            attributes={
                "http.request.method": request.method,
                "http.route": ROUTE,
                "url.path": request.path,
                "hookstream.source": source.name,
            },
            trace_id=None if self._parent is not None else request_trace(headers),
        )
        self.send: Span | None = None
        # An unsampled webhook (a sender's unsampled traceparent, a ratio sampler's drop) gets
        # no child spans: the sampler would drop them; its context goes on as the receive's.
        self._recording = tracing.recording(self.receive)

    def _context(self, span: Span) -> TraceContext:
        return tracing.context_of(span, self._parent)

    @contextmanager
    def verifying(self) -> Iterator[None]:
        """The ``verify`` span around the signature check and the JSON parse."""
        if not self._recording:
            yield
            return
        span = tracing.start("verify", self._context(self.receive))
        try:
            yield
        except Exception as exc:
            tracing.fail(span, exc)
            raise
        finally:
            span.end()

    def sending(self, topic: str) -> TraceContext:
        """Start the ``send`` span; its context is what the events record carries."""
        if not self._recording:
            return self._context(self.receive)
        self.send = tracing.start(
            f"send {topic}",
            self._context(self.receive),
            kind="producer",
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": topic,
            },
        )
        return self._context(self.send)

    def acknowledged(self, event_id: str, metadata: RecordMetadata) -> None:
        if self.send is not None:
            self.send.set_attributes(
                {
                    "messaging.destination.partition.id": str(metadata.partition),
                    "messaging.kafka.offset": metadata.offset,
                    "hookstream.event_id": event_id,
                }
            )

    def answered(self, answer: Response | asyncio.Future[Response]) -> None:
        """End both spans with the answer (now, or once the write's outcome is known)."""
        if isinstance(answer, Response):
            self._end(answer)
            return

        def done(future: asyncio.Future[Response]) -> None:
            error = None if future.cancelled() else future.exception()
            if error is not None:
                self.failed(error)
            else:
                self._end(None if future.cancelled() else future.result())

        answer.add_done_callback(done)

    def failed(self, error: BaseException) -> None:
        """End both spans failed: a bug, answered 500 by the server."""
        tracing.fail(self.receive, error)
        if self.send is not None:
            tracing.fail(self.send, error)
        self._end(None)

    def _end(self, response: Response | None) -> None:
        if response is not None:
            self.receive.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                self.receive.set_attribute("error.type", str(response.status))
                _error_status(self.receive)
        if self.send is not None:
            if response is None or response.status != 202:
                _error_status(self.send)
            self.send.end()
        self.receive.end()


def _error_status(span: Span) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR))
