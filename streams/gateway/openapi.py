"""The gateway's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Built from the config: one path per configured source, ``/webhooks/<name>``, with the header
parameters its signature scheme reads and a request body schema that says what the source needs
(its ``partition_key`` field, a non-empty string or an integer, as a required property), so a
client or fuzzer that follows the document is not refused for the body's shape; and
``/webhooks/{source}`` for any name (404 unless it is a source's). Every answer is documented,
errors included (one RFC 9457 problem schema with its ``code`` values), because senders
integrate against the error bodies as much as the 202. The fuzz tests (schemathesis) hold the
gateway to this document, valid data included.
"""

from __future__ import annotations

from typing import Any

from schemas.config import HookstreamConfig
from schemas.config_sources import SourceConfig
from streams.gateway.signatures import SCHEME_HEADERS
from streams.gateway.signatures.forms import FORM_MEDIA_TYPE, FORM_SCHEMES

PROBLEM_CODES: dict[int, tuple[str, ...]] = {
    400: (
        "invalid_json",
        "invalid_form",
        "missing_partition_key",
        "invalid_partition_key",
        "invalid_encoding",
        "malformed_request",
    ),
    401: (
        "missing_signature",
        "malformed_signature",
        "no_signature_matched",
        "missing_timestamp",
        "malformed_timestamp",
        "timestamp_out_of_window",
        "missing_webhook_id",
        "no_secret",
    ),
    403: ("ip_not_allowed",),
    404: ("unknown_source", "not_found"),
    405: ("method_not_allowed",),
    408: ("body_timeout",),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    431: ("head_too_large",),
    429: ("rate_limited",),
    503: ("broker_unavailable", "overloaded", "not_ready"),
}
_DESCRIPTIONS = {
    400: "The body is not JSON (a twilio or slack source's form: not a UTF-8 form, "
    "invalid_form; or not the gzip/deflate it says it is), lacks the source's "
    "partition key or holds one that is not a non-empty string or an integer, or the request "
    "is not valid HTTP/1.1: fix the request.",
    401: "Signature verification failed; `code` says which check.",
    403: "The client address is not in the source's allow_ips.",
    404: "No source of that name (or no such route).",
    405: "Method not allowed on this route.",
    408: "The body did not arrive within gateway.body_timeout_s of the headers: send it again.",
    413: "Body over gateway.max_body_bytes, or over Kafka's message size once wrapped.",
    415: "Content-Type is missing or not JSON (application/json or application/*+json; a "
    "twilio or slack source also takes application/x-www-form-urlencoded), or "
    "Content-Encoding is not gzip, deflate or identity.",
    431: "The request line and headers are over 64 KiB, or over 128 headers.",
    429: "The source's rate limit is exhausted: retry after Retry-After seconds.",
    503: "Nothing was accepted (Kafka unavailable or too many writes in flight): retry after "
    "Retry-After seconds.",
}


def _signature_headers(sources: tuple[SourceConfig, ...]) -> list[str]:
    names: dict[str, None] = {}
    for source in sources:
        sig = source.signature
        if sig.scheme == "hmac-sha256":
            names[sig.header] = None
            if sig.timestamp_header:
                names[sig.timestamp_header] = None
        names.update(dict.fromkeys(SCHEME_HEADERS.get(sig.scheme, ())))
        for extra in (source.id_header, source.type_header):
            if extra:
                names[extra] = None
    return list(names)


def _problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {
            "application/problem+json": {
                "schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Problem"},
                        {
                            "type": "object",
                            "properties": {
                                "status": {"const": status},
                                "code": {"enum": list(PROBLEM_CODES[status])},
                            },
                        },
                    ]
                }
            }
        },
    }
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {
                "description": "Whole seconds to wait before retrying.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    return response


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# What the gateway reads as JSON (streams.gateway.routes: schemas.events.is_json_media_type).
ACCEPTED_MEDIA_TYPES = ("application/json", "application/*+json")
_MEDIA_NOTE = (
    "Content-Type application/json or any application/*+json (e.g. "
    "application/cloudevents+json); parameters such as charset are ignored and the body must "
    "be UTF-8. Anything else, or no Content-Type, is answered 415."
)


def partition_key_schema(path: str) -> dict[str, Any]:
    """The body schema of a source keyed by the dotted payload ``path``: an object with each
    step required, ending in a non-empty string or an integer (what the gateway accepts)."""
    schema: dict[str, Any] = {
        "type": ["string", "integer"],
        "minLength": 1,
        # Beyond 64 bits the JSON parser reads integers as floats, and the gateway refuses them.
        "minimum": -(2**63),
        "maximum": 2**64 - 1,
        "description": "The partition key (the source's partition_key): events with the same "
        "key keep their order. A non-empty string or a 64-bit integer (3.0 is read as 3, up to "
        "2**53); "
        "null, a number with a fraction, a boolean, an object or a list is refused with 400 "
        "invalid_partition_key.",
    }
    for step in reversed(path.split(".")):
        schema = {"type": "object", "required": [step], "properties": {step: schema}}
    return schema


def request_body(source: SourceConfig) -> dict[str, Any]:
    """What ``source`` takes: any JSON, or an object holding its partition key."""
    schema = partition_key_schema(source.partition_key) if source.partition_key else {}
    content = {media: {"schema": schema} for media in ACCEPTED_MEDIA_TYPES}
    note = _MEDIA_NOTE
    if source.signature.scheme in FORM_SCHEMES:  # Twilio, Slack: data is the form's fields
        content[FORM_MEDIA_TYPE] = {"schema": {"type": "object"}}
        note += f" This source also takes {FORM_MEDIA_TYPE}: the event's data is its fields."
    return {"required": True, "description": note, "content": content}


_WEBHOOK_STATUSES = (400, 401, 403, 408, 413, 415, 429, 431, 503)


def _webhook_operation(source: SourceConfig) -> dict[str, Any]:
    operation = _webhook_answers(source)
    if source.signature.scheme == "slack":  # streams.gateway.signatures.handshake
        challenge = {"type": "object", "properties": {"challenge": {"type": "string"}}}
        operation["responses"]["200"] = _json_response(
            "Slack's url_verification handshake (signed): its challenge echoed; no event.",
            challenge,
        )
    return operation


def _webhook_answers(source: SourceConfig) -> dict[str, Any]:
    return {
        "operationId": f"receiveWebhook_{source.name}",
        "summary": f"Receive one webhook of source {source.name}; 202 only once Kafka "
        "acknowledged it.",
        "parameters": [
            {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
            for name in _signature_headers((source,))
        ],
        "requestBody": request_body(source),
        "responses": {
            "202": _json_response(
                "The event is on Kafka.", {"$ref": "#/components/schemas/Accepted"}
            ),
            **{str(s): _problem_response(s) for s in _WEBHOOK_STATUSES},
        },
    }


def _any_name_operation(sources: tuple[SourceConfig, ...]) -> dict[str, Any]:
    """Any name: 404 unless it is a configured source, which answers as its own path does
    (a client that fills the name in is not bound to the listed paths)."""
    operation = _webhook_operation(sources[0]) if sources else {"responses": {}}
    operation.update(
        operationId="receiveWebhookAnyName",
        summary="A name that is not a configured source: 404 unknown_source. A configured "
        "source's name answers as that source's own path (its body and headers there).",
        parameters=[
            {"name": "source", "in": "path", "required": True, "schema": {"type": "string"}},
            *(
                {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}
                for name in _signature_headers(sources)
            ),
        ],
        requestBody={"required": True, "content": {"application/json": {"schema": {}}}},
    )
    operation["responses"] = {
        **operation["responses"],
        **{str(s): _problem_response(s) for s in (*_WEBHOOK_STATUSES, 404)},
    }
    return operation


def build_openapi(config: HookstreamConfig) -> dict[str, Any]:
    """The document for this config (sources, their headers and bodies, every answer)."""
    not_ready = _problem_response(503)
    webhooks = {
        f"/webhooks/{source.name}": {"post": _webhook_operation(source)}
        for source in config.sources
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hookstream gateway",
            "version": "1",
            "description": "Webhooks in: verified, wrapped as CloudEvents, on Kafka (acks=all) "
            "before the 202.",
        },
        "paths": {
            **webhooks,
            "/webhooks/{source}": {"post": _any_name_operation(config.sources)},
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "The process is up.",
                    "responses": {"200": _json_response("Up.", _status_schema("ok"))},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Kafka is reachable and the gateway is not draining.",
                    "responses": {
                        "200": _json_response("Ready.", _status_schema("ready")),
                        "503": {
                            **not_ready,
                            "description": "Not ready: Kafka unreachable, or shutting down.",
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (text exposition format).",
                    "responses": {
                        "200": {
                            "description": "Metrics.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {"200": _json_response("OpenAPI 3.1.", {"type": "object"})},
                }
            },
        },
        "components": {
            "schemas": {
                "Accepted": {
                    "type": "object",
                    "required": ["id", "source", "type", "partition", "offset"],
                    "properties": {
                        "id": {"type": "string", "description": "The event (webhook) id."},
                        "source": {"type": "string"},
                        "type": {"type": "string"},
                        "partition": {"type": "integer", "minimum": 0},
                        "offset": {"type": "integer", "minimum": 0},
                    },
                },
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details; never carries a secret.",
                    "required": ["type", "title", "status", "detail", "code"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "code": {"type": "string"},
                    },
                },
            }
        },
    }


def _status_schema(value: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": value}},
    }
