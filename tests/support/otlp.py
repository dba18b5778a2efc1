"""An in-process OTLP/HTTP trace receiver: what a collector would get from hookstream.

``POST /v1/traces`` takes an ``ExportTraceServiceRequest`` (protobuf, gzip or not), decoded with
``opentelemetry-proto``; every span is kept as a :class:`ReceivedSpan` with its service, ids,
parent and attributes. Tests wait on :meth:`OtlpReceiver.wait_for` (a condition over the spans
received so far), never on a sleep.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.broker import free_port

SPAN_KINDS = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return None if which is None else getattr(value, which)


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.exports = 0
        self._changed = asyncio.Event()

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name")),
                            name=span.name,
                            kind=SPAN_KINDS[span.kind],
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status_code=span.status.code,
                        )
                    )
        self.exports += 1
        self._changed.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.trace_id == trace_id]

    async def wait_for(
        self, condition: Callable[[list[ReceivedSpan]], bool], *, timeout_s: float = 60.0
    ) -> list[ReceivedSpan]:
        """The spans received once ``condition`` holds for them; TimeoutError naming what
        arrived otherwise."""
        try:
            async with asyncio.timeout(timeout_s):
                while not condition(self.spans):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            seen = sorted({(span.service, span.name) for span in self.spans})
            raise TimeoutError(
                f"spans: condition not met; {len(self.spans)} received: {seen}"
            ) from None
        return list(self.spans)


@asynccontextmanager
async def running_otlp_receiver() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    """A receiver and its endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``'s value)."""
    receiver = OtlpReceiver()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", receiver.traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield receiver, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
