"""The webhook gateway's routes: ``POST /webhooks/{source}`` → verified CloudEvent on Kafka → 202.

The contract with senders: 202 means the event is on Kafka (acks=all). Anything else is an
RFC 9457 problem+json body naming the check that failed; 4xx means "fix the request" (429:
"slow down"), 503 with Retry-After means "retry later, nothing was accepted".

Checks run cheapest and most protective first: unknown source, client address, rate limit,
content type and size (all on the head, before any body is read), then signature, JSON, and
admission to the bounded set of in-flight writes. :mod:`streams.http.protocol` serves it (HTTP/1.1,
limits, timeouts) and :mod:`streams.gateway.server` runs it (TLS, graceful shutdown).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable

import orjson
from aiokafka.structs import RecordMetadata

from schemas.config import HookstreamConfig
from schemas.config_sources import SourceConfig
from schemas.errors import (
    BrokerUnavailable,
    ClientNotAllowed,
    GatewayBusy,
    InvalidPayload,
    PayloadTooLarge,
    RateLimited,
    RecordTooLarge,
    UnknownSource,
    UnsupportedMediaType,
    WebhookRejected,
)
from schemas.events import is_json_media_type
from schemas.topics import Topics
from streams.gateway import signatures
from streams.gateway.backpressure import WriteGate
from streams.gateway.client_access import client_address, in_networks
from streams.gateway.ingest import EncodedEvent, encode_event
from streams.gateway.limits import RateLimiter, retry_after_header
from streams.gateway.metrics import PRODUCE_SECONDS, UNKNOWN_SOURCE, count_refusal, count_request
from streams.gateway.openapi import build_openapi
from streams.gateway.signatures.forms import FORM_SCHEMES, form_data, is_form
from streams.gateway.traced import WebhookSpans
from streams.http.message import Request, Response
from streams.kafka.batch_writer import BatchingKafkaWriter
from streams.metrics import tracing
from streams.metrics.exposition import exposition

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_CLOUDEVENTS_HEADER = ("content-type", b"application/cloudevents+json")
_WEBHOOKS = "/webhooks/"
_ACCEPTED_LEVELS = {"info": logging.INFO, "debug": logging.DEBUG, "off": None}
Route = Callable[[Request], "Response | Awaitable[Response]"]


class GatewayState:
    """Everything the handlers share; one per process. Hot-path settings are copied out of the
    config once, so a webhook does not walk ``config.gateway.…`` attribute chains."""

    def __init__(self, config: HookstreamConfig, writer: BatchingKafkaWriter) -> None:
        self.config = config
        self.writer = writer
        self.topic = Topics(config.kafka.topic_prefix).events
        self.sources = {source.name: source for source in config.sources}
        self.gate = WriteGate(config.gateway.max_in_flight_writes)
        self.limiter = RateLimiter(config.sources)
        self.openapi = orjson.dumps(build_openapi(config))
        self.draining = False
        self.retry_after = str(config.gateway.retry_after_s)
        self.forwarded_headers = config.gateway.forwarded_headers
        # The accepted line's level (None: off) and sampled share (gateway.log_accepted).
        self.accepted_level = _ACCEPTED_LEVELS[config.gateway.log_accepted]
        self.accepted_sample_rate = config.gateway.log_accepted_sample_rate
        # Spans (streams.metrics.tracing) are set up by the CLI before the gateway is built.
        self.tracing = tracing.enabled()


def problem(status: int, title: str, detail: str, code: str, **headers: str) -> Response:
    body = {
        "type": f"https://hookstream.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    return Response(status, orjson.dumps(body), PROBLEM_JSON, headers or None)


def _refusal(exc: WebhookRejected | BrokerUnavailable, retry_after: str) -> Response:
    """The problem+json answer of a refusal; 429 and 503 say when to come back."""
    if isinstance(exc, BrokerUnavailable):
        return problem(
            503,
            "Service unavailable",
            f"the event was not accepted; retry later ({exc})",
            exc.code,
            **{"Retry-After": retry_after},
        )
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = retry_after_header(exc.retry_after_s)
    return problem(exc.status, exc.title, exc.detail, exc.code, **headers)


def _check_client(state: GatewayState, source: SourceConfig, request: Request) -> None:
    settings = state.config.gateway
    address = client_address(
        request.peer,
        request.headers,
        client_ip_header=settings.client_ip_header,
        trusted_proxies=settings.trusted_proxies,
    )
    if address is None or not in_networks(address, source.allow_ips):
        shown = "unknown" if address is None else str(address)
        raise ClientNotAllowed(f"client address {shown} may not post to source {source.name!r}")


def _check_head(state: GatewayState, source: SourceConfig, request: Request) -> None:
    """What needs no body: client address, rate limit, media type (size: streams.http.protocol)."""
    if source.allow_ips:
        _check_client(state, source, request)
    wait_s = state.limiter.take(source.name)
    if wait_s > 0:
        raise RateLimited(
            f"source {source.name!r} is over its rate limit; retry later", retry_after_s=wait_s
        )
    raw_type = request.headers.get("Content-Type")
    if (
        raw_type != "application/json"
        and (raw_type is None or not is_json_media_type(raw_type))
        and not signatures.takes_form(source.signature, raw_type)  # Twilio, Slack: forms
    ):
        raise UnsupportedMediaType(_media_type_refusal(raw_type))


def _media_type_refusal(raw_type: str | None) -> str:
    """Why a Content-Type is refused, and what to send instead (openapi.ACCEPTED_MEDIA_TYPES)."""
    wanted = "send application/json (or an application/*+json type)"
    if raw_type is None:
        return f"the Content-Type header is missing; {wanted}"
    media = raw_type.partition(";")[0].strip().lower()
    if media in ("application/x-www-form-urlencoded", "multipart/form-data"):
        wanted += "; a GitHub webhook: set its content type to application/json"
    return f"Content-Type {media!r} is not accepted; {wanted}"


def _verified(source: SourceConfig, request: Request) -> tuple[object, bytes]:
    """The body's JSON and the event's data as JSON bytes (the body itself, or a form's fields
    as an object: streams.gateway.signatures.forms), once its signature is verified."""
    body = request.body
    signature = source.signature
    signatures.verify(signature, request.headers, body, target=request.target)
    if signature.scheme in FORM_SCHEMES and is_form(request.headers.get("Content-Type")):
        fields = form_data(body)
        return fields, orjson.dumps(fields)
    try:
        return orjson.loads(body), body
    except orjson.JSONDecodeError as exc:
        raise InvalidPayload(f"body is not valid JSON: {exc}", code="invalid_json") from None


def _encode(
    state: GatewayState, source: SourceConfig, request: Request, spans: WebhookSpans | None
) -> EncodedEvent | Response:
    """The verified body as the CloudEvent to write, in the webhook's trace (the sender's
    ``traceparent``, else a new trace; with spans, the ``send`` span's context); or the 200 a
    sender's handshake expects (Slack's url_verification), written nowhere."""
    if spans is None:
        payload, data = _verified(source, request)
        trace = None  # encode_event: the sender's context, or a new trace
    else:
        with spans.verifying():
            payload, data = _verified(source, request)
        trace = spans.sending(state.topic)
    if source.signature.scheme == "slack":
        answer = signatures.handshake(source.signature, payload)
        if answer is not None:
            return Response(200, answer)
    return encode_event(
        source,
        request.headers,
        data,
        payload,
        forwarded_headers=state.forwarded_headers,
        trace=trace,
    )


def _record_headers(event: EncodedEvent) -> list[tuple[str, bytes]]:
    """The events record's headers: structured-mode CloudEvent, and the trace context."""
    trace = event.trace
    return [_CLOUDEVENTS_HEADER] if trace is None else [_CLOUDEVENTS_HEADER, *trace.headers()]


class Gateway:
    """The gateway's request handling, as the :class:`streams.http.protocol.Application` it serves.

    A webhook's head is checked before its body is read (:meth:`check_head`); the whole
    request is verified, encoded and handed to the batch writer (:meth:`handle`), and the
    answer is written from the acknowledgement's callback: no task per webhook. 404 and 405
    (with ``Allow``) answer problem+json like every other refusal.
    """

    def __init__(self, config: HookstreamConfig, writer: BatchingKafkaWriter) -> None:
        self.state = GatewayState(config, writer)
        self._reads: dict[str, Route] = {
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/metrics": self.metrics,
            "/openapi.json": self.openapi,
        }

    def check_head(self, request: Request) -> Response | None:
        path = request.path
        if path.startswith(_WEBHOOKS):
            name = path[len(_WEBHOOKS) :]
            if not name or "/" in name:
                return _not_found(request)
            if request.method != "POST":
                return _method_not_allowed(request, "POST")
            state = self.state
            source = state.sources.get(name)
            try:
                if source is None:
                    raise UnknownSource(f"no source named {name!r} is configured")
                _check_head(state, source, request)
            except WebhookRejected as exc:
                return self._refused(UNKNOWN_SOURCE if source is None else name, request, exc)
            request.context = source
            return None
        if path not in self._reads:
            return _not_found(request)
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed(request, "GET, HEAD")
        return None

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        source = request.context
        if source is None:  # a read route: check_head let only those and webhooks through
            return self._reads[request.path](request)
        if not self.state.tracing:  # receive_webhook's first branch, one call fewer
            return self._receive(source, request, None)
        return self.receive_webhook(source, request)

    def refuse(self, request: Request | None, error: WebhookRejected) -> Response:
        """A refusal by the HTTP layer (size, timeout, encoding, syntax), counted like ours."""
        source = request.context if request is not None else None
        label = source.name if isinstance(source, SourceConfig) else UNKNOWN_SOURCE
        return self._refused(label, request, error)

    def receive_webhook(
        self, source: SourceConfig, request: Request
    ) -> Response | asyncio.Future[Response]:
        if not self.state.tracing:
            return self._receive(source, request, None)
        spans = WebhookSpans(source, request)
        try:
            answer = self._receive(source, request, spans)
        except Exception as exc:  # a bug, answered 500 by the server
            spans.failed(exc)
            raise
        spans.answered(answer)
        return answer

    def _receive(
        self, source: SourceConfig, request: Request, spans: WebhookSpans | None
    ) -> Response | asyncio.Future[Response]:
        state = self.state
        try:
            encoded = _encode(state, source, request, spans)
            if isinstance(encoded, Response):  # a handshake, not an event
                count_request(source.name, encoded.status)
                return encoded
            event = encoded
            if not state.gate.try_enter():
                if state.gate.broker_failing:
                    raise GatewayBusy(
                        "Kafka is not acknowledging writes", code="broker_unavailable"
                    )
                raise GatewayBusy("too many writes in flight")
            try:
                ack = state.writer.submit(
                    state.topic,
                    event.value,
                    key=event.key.encode(),
                    headers=_record_headers(event),
                )
            except BaseException as exc:
                state.gate.leave(acknowledged=False if isinstance(exc, BrokerUnavailable) else None)
                raise
        except RecordTooLarge:
            return self._refused(source.name, request, _too_large_for_kafka(event))
        except (WebhookRejected, BrokerUnavailable) as exc:
            return self._refused(source.name, request, exc)
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        ack.add_done_callback(
            functools.partial(
                self._acknowledged, answer, source.name, request, event, time.perf_counter(), spans
            )
        )
        return answer

    def _acknowledged(
        self,
        answer: asyncio.Future[Response],
        label: str,
        request: Request,
        event: EncodedEvent,
        started_s: float,
        spans: WebhookSpans | None,
        ack: asyncio.Future[RecordMetadata],
    ) -> None:
        """The write's outcome: 202 with the record's place, or the refusal that says why."""
        gate = self.state.gate
        error = BrokerUnavailable("the write was cancelled") if ack.cancelled() else ack.exception()
        if error is None:
            gate.leave(acknowledged=True)
            PRODUCE_SECONDS.observe(time.perf_counter() - started_s)
            metadata = ack.result()
            if spans is not None:
                spans.acknowledged(event.id, metadata)
            accepted = {
                "id": event.id,
                "source": event.source,
                "type": event.type,
                "partition": metadata.partition,
                "offset": metadata.offset,
            }
            count_request(label, 202)
            answer.set_result(Response(202, orjson.dumps(accepted)))
            self._log_accepted(event, metadata)
        elif isinstance(error, RecordTooLarge):
            # Within max_body_bytes but over Kafka's limit once wrapped: the sender's retry
            # would fail alike, so 413, and the broker is fine (the gate is not told otherwise).
            gate.leave(acknowledged=None)
            answer.set_result(self._refused(label, request, _too_large_for_kafka(event)))
        elif isinstance(error, BrokerUnavailable):
            gate.leave(acknowledged=False)
            log.warning("503 for %s/%s: %s", label, event.id, error, extra=_log_ids(event))
            answer.set_result(self._refused(label, request, error))
        else:  # not an outcome the writer promises: a bug, answered 500 by the server
            gate.leave(acknowledged=None)
            answer.set_exception(error)

    def _log_accepted(self, event: EncodedEvent, metadata: RecordMetadata) -> None:
        """One line per accepted webhook, at gateway.log_accepted's level and sampled share;
        nothing is formatted when that level is off (the hot path pays one level check)."""
        level = self.state.accepted_level
        if level is None or not log.isEnabledFor(level):
            return
        rate = self.state.accepted_sample_rate
        if rate < 1.0 and random.random() >= rate:  # noqa: S311 - sampling, not a secret
            return
        log.log(
            level,
            "accepted %s/%s -> %s[%d]@%d",
            event.source,
            event.id,
            metadata.topic,
            metadata.partition,
            metadata.offset,
            extra=_log_ids(event),
        )

    def _refused(
        self, label: str, request: Request | None, exc: WebhookRejected | BrokerUnavailable
    ) -> Response:
        if request is not None:
            log.info("refused %s %s: %s (%s)", request.method, request.path, exc.code, exc)
        else:
            log.info("refused a request: %s (%s)", exc.code, exc)
        count_refusal(label, exc.code)
        response = _refusal(exc, self.state.retry_after)
        count_request(label, response.status)
        return response

    def healthz(self, request: Request) -> Response:
        return Response(200, b'{"status":"ok"}')

    async def readyz(self, request: Request) -> Response:
        """Ready = not draining, and Kafka answers a metadata request.

        Deliberately not "no write failed lately": that flag clears only when a webhook's
        write succeeds, and a load balancer that stopped sending because of it would never
        send the write that clears it.
        """
        state = self.state
        reason = None
        if state.draining:
            reason = "the gateway is shutting down"
        else:
            try:
                async with asyncio.timeout(state.config.gateway.readiness_timeout_s):
                    await state.writer.ping()
            except (TimeoutError, BrokerUnavailable):
                reason = "Kafka is not reachable"
        if reason is not None:
            retry = {"Retry-After": state.retry_after}
            return problem(503, "Not ready", reason, "not_ready", **retry)
        return Response(200, b'{"status":"ready"}')

    def metrics(self, request: Request) -> Response:
        body, content_type = exposition()
        return Response(200, body, content_type)

    def openapi(self, request: Request) -> Response:
        return Response(200, self.state.openapi)


def _log_ids(event: EncodedEvent) -> dict[str, str]:
    """A line's event fields (streams.logs): no task per webhook carries them here."""
    return {"event_id": event.id, "trace_id": event.traceid, "source": event.source}


def _too_large_for_kafka(event: EncodedEvent) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the event ({len(event.value)} bytes with its envelope) is over Kafka's message size limit"
    )


def _not_found(request: Request) -> Response:
    return problem(404, "Not Found", f"{request.method} {request.path}: Not Found", "not_found")


def _method_not_allowed(request: Request, allow: str) -> Response:
    detail = f"{request.method} {request.path}: Method Not Allowed"
    # Allow is what the status requires (RFC 9110 §15.5.6).
    return problem(405, "Method Not Allowed", detail, "method_not_allowed", Allow=allow)
