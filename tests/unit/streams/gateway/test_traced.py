"""The gateway's spans of one webhook (streams.gateway.traced): receive under the sender's span,
verify and send under receive, the events record in the send span's context; an unsampled
webhook gets no child span; a UUID X-Request-Id names a new trace."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka.structs import RecordMetadata
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from schemas.config_sources import SignatureConfig, SourceConfig
from streams.gateway.traced import WebhookSpans
from streams.http.message import Request, Response
from tests.support.spans import exporting

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER = "00f067aa0ba902b7"
SOURCE = SourceConfig(name="helpdesk", signature=SignatureConfig(scheme="none"))


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    with exporting("gateway") as exporter:
        yield exporter


def request(**headers: str) -> Request:
    given = CIMultiDict({name.replace("_", "-"): value for name, value in headers.items()})
    return Request("POST", "/webhooks/helpdesk", CIMultiDictProxy(given), "127.0.0.1", "1.1")


def ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    assert span.context is not None
    parent = None if span.parent is None else f"{span.parent.span_id:016x}"
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}", parent


def metadata() -> RecordMetadata:
    return RecordMetadata("p.events", 2, None, 41, 0, None, 0)


async def test_a_webhook_is_a_receive_span_with_verify_and_send_under_it(
    exported: InMemorySpanExporter,
) -> None:
    spans = WebhookSpans(SOURCE, request(traceparent=f"00-{TRACE}-{SENDER}-01", tracestate="a=1"))
    with spans.verifying():
        pass
    record = spans.sending("p.events")
    spans.acknowledged("wh-1", metadata())
    answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
    spans.answered(answer)
    # Receive and send stay open until the answer.
    assert [span.name for span in exported.get_finished_spans()] == ["verify"]
    answer.set_result(Response(202))
    await asyncio.sleep(0)  # the future's callbacks run on the next turn of the loop
    by_name = {span.name: span for span in exported.get_finished_spans()}
    receive = by_name["POST /webhooks/{source}"]
    assert ids(receive)[0] == TRACE
    assert ids(receive)[2] == SENDER
    assert ids(by_name["verify"])[2] == ids(receive)[1]
    send = by_name["send p.events"]
    assert ids(send)[2] == ids(receive)[1]
    assert (record.trace_id, record.span_id, record.state) == (TRACE, ids(send)[1], "a=1")
    assert receive.attributes is not None
    assert receive.attributes["http.response.status_code"] == 202
    assert receive.attributes["hookstream.source"] == "helpdesk"
    assert send.attributes is not None
    assert send.attributes["messaging.kafka.offset"] == 41
    assert send.attributes["messaging.destination.partition.id"] == "2"
    assert send.attributes["hookstream.event_id"] == "wh-1"


async def test_a_refusal_ends_the_spans_a_failed_verify_marked(
    exported: InMemorySpanExporter,
) -> None:
    spans = WebhookSpans(SOURCE, request())
    with pytest.raises(ValueError, match="bad signature"), spans.verifying():
        raise ValueError("bad signature")
    spans.answered(Response(401))
    by_name = {span.name: span for span in exported.get_finished_spans()}
    assert by_name["verify"].status.status_code is StatusCode.ERROR
    assert by_name["POST /webhooks/{source}"].parent is None  # no sender's context: a root
    assert set(by_name) == {"verify", "POST /webhooks/{source}"}


def test_an_unsampled_webhook_has_no_child_spans(exported: InMemorySpanExporter) -> None:
    spans = WebhookSpans(SOURCE, request(traceparent=f"00-{TRACE}-{SENDER}-00"))
    with spans.verifying():
        pass
    record = spans.sending("p.events")
    spans.answered(Response(202))
    assert exported.get_finished_spans() == ()
    assert record.trace_id == TRACE
    assert not record.sampled


def test_a_uuid_request_id_names_the_root_spans_trace(exported: InMemorySpanExporter) -> None:
    spans = WebhookSpans(SOURCE, request(x_request_id="4bf92f35-77b3-4da6-a3ce-929d0e0e4736"))
    spans.answered(Response(202))
    (receive,) = exported.get_finished_spans()
    assert ids(receive)[0] == TRACE
    assert receive.parent is None
