"""Turn a verified webhook into the CloudEvent that goes on the events topic.

Pure functions: the gateway and the publish client share them, and unit tests cover them
without a server.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from schemas.config import SourceConfig
from schemas.events import CloudEvent
from schemas.templates import lookup
from streams.errors import InvalidPayload, TemplateError
from streams.signatures import delivery_id_source, type_source


def payload_field(payload: Any, path: str) -> Any:
    """Value at a dotted ``path`` of the payload, or None when absent."""
    try:
        return lookup({"payload": payload}, ("payload", *path.split(".")))
    except TemplateError:
        return None


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def webhook_id(source: SourceConfig, headers: Mapping[str, str], payload: Any, body: bytes) -> str:
    """The sender's delivery id: a header, a payload field, or else a hash of the body.

    A sender retrying the same delivery sends the same id, which is what makes dedupe work.
    The source's ``id_header``/``id_field`` come first; else the signature scheme's own
    delivery id (Standard Webhooks ``webhook-id``, GitHub ``X-GitHub-Delivery``, Stripe's
    payload ``id``); else the body's SHA-256, so identical retries still collapse.
    """
    if source.id_header:
        value = headers.get(source.id_header)
        if value and value.strip():
            return value.strip()
    if source.id_field:
        found = _scalar_text(payload_field(payload, source.id_field))
        if found:
            return found
    scheme_headers, scheme_field = delivery_id_source(source.signature.scheme)
    for name in scheme_headers:
        value = headers.get(name)
        if value and value.strip():
            return value.strip()
    if scheme_field:
        found = _scalar_text(payload_field(payload, scheme_field))
        if found:
            return found
    return "sha256:" + hashlib.sha256(body).hexdigest()


def event_type(source: SourceConfig, headers: Mapping[str, str], payload: Any) -> str:
    """The source's ``type_header``/``type_field``, else the scheme's (GitHub's
    ``X-GitHub-Event``, the payload ``type`` of Stripe and Standard Webhooks), else
    ``default_type``."""
    scheme_header, scheme_field = type_source(source.signature.scheme)
    for name in (source.type_header, scheme_header):
        if name:
            value = headers.get(name)
            if value and value.strip():
                return value.strip()
    for path in (source.type_field, scheme_field):
        if path:
            found = _scalar_text(payload_field(payload, path))
            if found:
                return found
    return source.default_type


def build_event(
    source: SourceConfig,
    headers: Mapping[str, str],
    body: bytes,
    payload: Any,
    *,
    forwarded_headers: tuple[str, ...],
    received_at: datetime | None = None,
) -> CloudEvent:
    event_id = webhook_id(source, headers, payload, body)
    key = event_id
    if source.partition_key:
        found = _scalar_text(payload_field(payload, source.partition_key))
        if found is None:
            raise InvalidPayload(
                f"the payload has no field {source.partition_key!r} (the source's partition_key)",
                code="missing_partition_key",
            )
        key = found
    kept = {name: headers[name] for name in forwarded_headers if name in headers}
    return CloudEvent(
        id=event_id,
        source=source.name,
        type=event_type(source, headers, payload),
        time=received_at or datetime.now(UTC),
        data=payload,
        partitionkey=key,
        traceid=headers.get("x-request-id") or uuid.uuid4().hex,
        webhookheaders=kept,
    )
