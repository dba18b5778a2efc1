"""The webhook gateway: ``POST /webhooks/{source}`` → verified CloudEvent on Kafka → 202.

The contract with senders: 202 means the event is on Kafka (acks=all). Anything else is an
RFC 9457 problem+json body naming the check that failed; 4xx means "fix the request", 503 with
Retry-After means "retry later, nothing was accepted".
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web

from schemas.codec import dumps
from schemas.config import HookstreamConfig
from streams import signatures
from streams.errors import (
    BrokerUnavailable,
    InvalidPayload,
    PayloadTooLarge,
    UnknownSource,
    UnsupportedMediaType,
    WebhookRejected,
)
from streams.ingest import build_event
from streams.producer import KafkaWriter
from streams.topics import Topics, ensure_topics

log = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("config", HookstreamConfig)
WRITER_KEY = web.AppKey("writer", KafkaWriter)
PROBLEM_JSON = "application/problem+json"
_JSON_TYPES = ("application/json", "text/json", "text/plain", "application/x-json")


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


@web.middleware
async def _problems(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every refusal, including aiohttp's own 404/405, answers problem+json."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except WebhookRejected as exc:
        log.info("refused %s %s: %s (%s)", request.method, request.path, exc.code, exc.detail)
        return problem(exc.status, exc.title, exc.detail, exc.code)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return problem(
            exc.status, exc.reason, f"{request.method} {request.path}: {exc.reason}", code
        )


async def _read_body(request: web.Request, max_body_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise PayloadTooLarge(
            f"body of {request.content_length} bytes exceeds the limit of {max_body_bytes} bytes"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_body_bytes:
            raise PayloadTooLarge(f"body exceeds the limit of {max_body_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def receive_webhook(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    name = request.match_info["source"]
    source = config.source(name)
    if source is None:
        raise UnknownSource(f"no source named {name!r} is configured")
    content_type = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
    if content_type.lower() not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not accepted; send application/json"
        )
    body = await _read_body(request, config.gateway.max_body_bytes)
    signatures.verify(source.signature, request.headers, body)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidPayload(f"body is not valid JSON: {exc}", code="invalid_json") from None
    event = build_event(
        source, request.headers, body, payload, forwarded_headers=config.gateway.forwarded_headers
    )
    topic = Topics(config.kafka.topic_prefix).events
    try:
        metadata = await request.app[WRITER_KEY].send(
            topic,
            dumps(event),
            key=event.partitionkey.encode(),
            headers=[("content-type", b"application/cloudevents+json")],
        )
    except BrokerUnavailable as exc:
        log.warning("503 for %s/%s: %s", source.name, event.id, exc)
        retry_after = str(config.gateway.retry_after_s)
        return problem(
            503,
            "Broker unavailable",
            "the event was not accepted; retry later",
            "broker_unavailable",
            **{"Retry-After": retry_after},
        )
    return web.json_response(
        {
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "partition": metadata.partition,
            "offset": metadata.offset,
        },
        status=202,
        dumps=lambda obj: orjson.dumps(obj).decode(),
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(config: HookstreamConfig, writer: KafkaWriter) -> web.Application:
    # aiohttp's own body limit is set above ours so that our check, with its clear answer, runs.
    app = web.Application(
        middlewares=[_problems], client_max_size=config.gateway.max_body_bytes + 1024
    )
    app[CONFIG_KEY] = config
    app[WRITER_KEY] = writer
    app.router.add_post("/webhooks/{source}", receive_webhook)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(config: HookstreamConfig, *, port: int | None = None) -> None:
    """Run the gateway until cancelled: topics ensured, producer up, then listen."""
    await ensure_topics(config.kafka)
    async with KafkaWriter(config.kafka, client_id="hookstream-gateway") as writer:
        runner = web.AppRunner(create_app(config, writer), access_log=None)
        await runner.setup()
        listen_port = config.gateway.port if port is None else port
        site = web.TCPSite(runner, config.gateway.host, listen_port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else listen_port
        print(f"gateway listening on http://{config.gateway.host}:{bound}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            # Stop accepting, let in-flight requests finish their Kafka writes, then close.
            await runner.cleanup()
