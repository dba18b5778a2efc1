"""The webhook gateway's routes: ``POST /webhooks/{source}`` → verified CloudEvent on Kafka → 202.

The contract with senders: 202 means the event is on Kafka (acks=all). Anything else is an
RFC 9457 problem+json body naming the check that failed; 4xx means "fix the request" (429:
"slow down"), 503 with Retry-After means "retry later, nothing was accepted".

Checks run cheapest and most protective first: unknown source, client address, rate limit,
content type, size, signature, JSON, then admission to the bounded set of in-flight writes.
:mod:`streams.gateway_server` runs the app (TLS, graceful shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from schemas.config import HookstreamConfig, SourceConfig
from streams import signatures
from streams.backpressure import WriteGate
from streams.errors import (
    BodyTimeout,
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
from streams.gateway_metrics import PRODUCE_SECONDS, UNKNOWN_SOURCE, count_refusal, count_request
from streams.ingest import encode_event
from streams.metrics import metrics_handler
from streams.netguard import client_address, in_networks
from streams.openapi import build_openapi
from streams.producer import KafkaWriter
from streams.ratelimit import RateLimiter, retry_after_header
from streams.topics import Topics

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_JSON_TYPES = frozenset(("application/json", "text/json", "text/plain", "application/x-json"))
_CLOUDEVENTS_HEADERS = [("content-type", b"application/cloudevents+json")]
_JSON_HEADERS = {"Content-Type": "application/json"}
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_WEBHOOKS = "/webhooks/"


@dataclass
class GatewayState:
    """Everything the handlers share; one per process. Hot-path settings are copied out of the
    config once, so a webhook does not walk ``config.gateway.…`` attribute chains."""

    config: HookstreamConfig
    writer: KafkaWriter
    topic: str
    sources: dict[str, SourceConfig]
    gate: WriteGate
    limiter: RateLimiter
    openapi: bytes
    draining: bool = False
    retry_after: str = field(init=False)
    max_body_bytes: int = field(init=False)
    body_timeout_s: float = field(init=False)
    forwarded_headers: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.retry_after = str(self.config.gateway.retry_after_s)
        self.max_body_bytes = self.config.gateway.max_body_bytes
        self.body_timeout_s = self.config.gateway.body_timeout_s
        self.forwarded_headers = self.config.gateway.forwarded_headers


def problem(status: int, title: str, detail: str, code: str, **headers: str) -> web.Response:
    body = {
        "type": f"https://hookstream.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    return web.Response(
        status=status, body=orjson.dumps(body), content_type=PROBLEM_JSON, headers=headers
    )


def _refusal(exc: WebhookRejected | BrokerUnavailable, retry_after: str) -> web.Response:
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


async def _continue(request: web.BaseRequest) -> None:
    """Answer ``Expect: 100-continue`` once the checks that need no body have passed.

    curl and many HTTP clients send it for bodies over 1 KiB and wait for this line before
    sending the body; a refusal (415, 413 by Content-Length, 429, 403) goes out instead of it.
    """
    expect = request.headers.get("Expect")
    if expect is not None and expect.lower() == "100-continue" and request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim line is not part of the answer's size


async def _read_body(request: web.BaseRequest, max_body_bytes: int, timeout_s: float) -> bytes:
    length = request.content_length
    if length is not None:
        if length > max_body_bytes:
            raise PayloadTooLarge(
                f"body of {length} bytes exceeds the limit of {max_body_bytes} bytes"
            )
        await _continue(request)
        content = request.content
        if content.is_eof():  # the whole body came with the headers (most webhooks): take it
            body = content.read_nowait()
        else:
            try:
                body = await _within(timeout_s, request.read())
            except web.HTTPRequestEntityTooLarge:  # aiohttp's limit (ours + 1 KiB), unpacked
                raise PayloadTooLarge(
                    f"body exceeds the limit of {max_body_bytes} bytes once decompressed"
                ) from None
        # Content-Length counts the bytes sent; with Content-Encoding: gzip aiohttp hands us
        # the decompressed body, which the limit is about.
        if len(body) > max_body_bytes:
            raise PayloadTooLarge(
                f"body of {len(body)} bytes (decompressed) exceeds the limit of "
                f"{max_body_bytes} bytes"
            )
        return body
    await _continue(request)
    return await _within(timeout_s, _read_chunked(request, max_body_bytes))


async def _read_chunked(request: web.BaseRequest, max_body_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_body_bytes:
            raise PayloadTooLarge(f"body exceeds the limit of {max_body_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _within(timeout_s: float, reading: Coroutine[Any, Any, bytes]) -> bytes:
    """A body that is still arriving must arrive within ``timeout_s``: a sender that stops
    half-way would otherwise hold its connection, and its place under the rate limit, forever
    (slow-body attacks). Only this slow path pays for the timer."""
    try:
        async with asyncio.timeout(timeout_s):
            return await reading
    except TimeoutError:
        raise BodyTimeout(
            f"the body did not arrive within {timeout_s:g} s of the headers; send it again"
        ) from None


def _check_client(state: GatewayState, source: SourceConfig, request: web.BaseRequest) -> None:
    settings = state.config.gateway
    peer = request.transport.get_extra_info("peername") if request.transport else None
    address = client_address(
        peer[0] if isinstance(peer, tuple) and peer else None,
        request.headers,
        client_ip_header=settings.client_ip_header,
        trusted_proxies=settings.trusted_proxies,
    )
    if address is None or not in_networks(address, source.allow_ips):
        shown = "unknown" if address is None else str(address)
        raise ClientNotAllowed(f"client address {shown} may not post to source {source.name!r}")


async def _accept(
    state: GatewayState, source: SourceConfig, request: web.BaseRequest
) -> web.Response:
    if source.allow_ips:
        _check_client(state, source, request)
    wait_s = state.limiter.take(source.name)
    if wait_s > 0:
        raise RateLimited(
            f"source {source.name!r} is over its rate limit; retry later", retry_after_s=wait_s
        )
    headers = request.headers
    raw_type = headers.get("Content-Type")
    if raw_type is not None and raw_type != "application/json":
        # A plain split rather than aiohttp's full parser: only the media type matters here.
        content_type = raw_type.partition(";")[0].strip().lower()
        if content_type not in _JSON_TYPES:
            raise UnsupportedMediaType(
                f"Content-Type {content_type!r} is not accepted; send application/json"
            )
    body = await _read_body(request, state.max_body_bytes, state.body_timeout_s)
    signatures.verify(source.signature, headers, body)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidPayload(f"body is not valid JSON: {exc}", code="invalid_json") from None
    event = encode_event(
        source,
        headers,
        body,
        payload,
        forwarded_headers=state.forwarded_headers,
    )
    if not state.gate.try_enter():
        if state.gate.broker_failing:
            raise GatewayBusy("Kafka is not acknowledging writes", code="broker_unavailable")
        raise GatewayBusy("too many writes in flight")
    started = time.perf_counter()
    acknowledged: bool | None = None  # None: neither outcome (e.g. cancelled), says nothing
    try:
        metadata = await state.writer.send(
            state.topic, event.value, key=event.key.encode(), headers=_CLOUDEVENTS_HEADERS
        )
        acknowledged = True
    except BrokerUnavailable as exc:
        acknowledged = False
        log.warning("503 for %s/%s: %s", source.name, event.id, exc)
        raise
    except RecordTooLarge:
        # Within max_body_bytes but over Kafka's limit once wrapped: the sender's retry would
        # fail alike, so 413, and the broker is fine (the gate is not told otherwise).
        raise PayloadTooLarge(
            f"the event ({len(event.value)} bytes with its envelope) is over Kafka's "
            "message size limit"
        ) from None
    finally:
        state.gate.leave(acknowledged=acknowledged)
    PRODUCE_SECONDS.observe(time.perf_counter() - started)
    answer = {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "partition": metadata.partition,
        "offset": metadata.offset,
    }
    # A headers dict rather than content_type=: aiohttp then skips parsing the media type.
    return web.Response(status=202, body=orjson.dumps(answer), headers=_JSON_HEADERS)


class Gateway:
    """The gateway's request handling, served by aiohttp's low-level :class:`web.Server`.

    Why not a ``web.Application``: its router, middleware chain, match info and ``Request``
    subclass cost ~8 µs of each webhook's ~90 µs (bench/gateway/NOTES.md), for five fixed
    routes. Here one ``startswith`` finds the webhook route and a dict the four GET routes;
    404 and 405 (with ``Allow``) answer problem+json like every other refusal.
    """

    def __init__(self, config: HookstreamConfig, writer: KafkaWriter) -> None:
        self.state = GatewayState(
            config=config,
            writer=writer,
            topic=Topics(config.kafka.topic_prefix).events,
            sources={s.name: s for s in config.sources},
            gate=WriteGate(config.gateway.max_in_flight_writes),
            limiter=RateLimiter(config.sources),
            openapi=orjson.dumps(build_openapi(config)),
        )
        self._reads: dict[str, Handler] = {
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/metrics": metrics_handler,
            "/openapi.json": self.openapi,
        }
        # aiohttp's own body limit is set above ours so that our check, with its answer, runs.
        self._client_max_size = config.gateway.max_body_bytes + 1024

    def server(self, **kwargs: Any) -> web.Server:
        """The low-level server; ``kwargs`` go to aiohttp's per-connection RequestHandler."""
        return web.Server(self.handle, request_factory=self._make_request, **kwargs)

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            task.get_loop(),
            client_max_size=self._client_max_size,
        )

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith(_WEBHOOKS):
            name = path[len(_WEBHOOKS) :]
            if not name or "/" in name:
                return _not_found(request)
            if request.method != "POST":
                return _method_not_allowed(request, "POST")
            return await self.receive_webhook(name, request)
        read = self._reads.get(path)
        if read is None:
            return _not_found(request)
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed(request, "GET, HEAD")
        return await read(request)

    async def receive_webhook(self, name: str, request: web.BaseRequest) -> web.Response:
        state = self.state
        source = state.sources.get(name)
        label = UNKNOWN_SOURCE if source is None else name
        try:
            if source is None:
                raise UnknownSource(f"no source named {name!r} is configured")
            response = await _accept(state, source, request)
        except (WebhookRejected, BrokerUnavailable) as exc:
            log.info("refused %s %s: %s (%s)", request.method, request.path, exc.code, exc)
            count_refusal(label, exc.code)
            response = _refusal(exc, state.retry_after)
        count_request(label, response.status)
        return response

    async def healthz(self, request: web.BaseRequest) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.BaseRequest) -> web.Response:
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
        return web.json_response({"status": "ready"})

    async def openapi(self, request: web.BaseRequest) -> web.Response:
        return web.Response(body=self.state.openapi, content_type="application/json")


def _not_found(request: web.BaseRequest) -> web.Response:
    return problem(404, "Not Found", f"{request.method} {request.path}: Not Found", "not_found")


def _method_not_allowed(request: web.BaseRequest, allow: str) -> web.Response:
    detail = f"{request.method} {request.path}: Method Not Allowed"
    # Allow is what the status requires (RFC 9110 §15.5.6).
    return problem(405, "Method Not Allowed", detail, "method_not_allowed", Allow=allow)
