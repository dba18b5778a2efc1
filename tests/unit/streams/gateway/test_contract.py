"""The gateway's contract, exactly (issue 17): the content types it takes and the bodies its
OpenAPI document declares agree with what the code accepts.

Head checks run on :class:`~streams.gateway.routes.Gateway` itself (no server, no Kafka: the
writer is never reached before the body); bodies are held both to the document's JSON Schema
and to the gateway's own encoding of them.
"""

from __future__ import annotations

import json
from typing import Any, cast

import jsonschema
import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from schemas.config import HookstreamConfig
from schemas.errors import InvalidPayload
from streams.gateway.ingest import encode_event
from streams.gateway.openapi import ACCEPTED_MEDIA_TYPES, build_openapi
from streams.gateway.routes import Gateway
from streams.http.message import Request
from streams.kafka.batch_writer import BatchingKafkaWriter

CONFIG = HookstreamConfig.model_validate(
    {
        "sources": [
            {"name": "open", "signature": {"scheme": "none"}},
            {"name": "flat", "signature": {"scheme": "none"}, "partition_key": "customer_id"},
            {"name": "deep", "signature": {"scheme": "none"}, "partition_key": "customer.id"},
            {
                "name": "signed",
                "signature": {"scheme": "github", "secret_env": "X"},
                "partition_key": "repository.id",
            },
        ]
    },
    context={"env": {"X": "s"}},
)
SOURCES = {source.name: source for source in CONFIG.sources}
DOCUMENT = build_openapi(CONFIG)


def head(content_type: str | None, source: str = "open") -> tuple[int, str] | None:
    """The gateway's answer to a head (status, code), or None when it would read the body."""
    headers: CIMultiDict[str] = CIMultiDict()
    if content_type is not None:
        headers["Content-Type"] = content_type
    request = Request("POST", f"/webhooks/{source}", CIMultiDictProxy(headers), "127.0.0.1", "1.1")
    gateway = Gateway(CONFIG, cast(BatchingKafkaWriter, None))
    answer = gateway.check_head(request)
    if answer is None:
        return None
    return answer.status, orjson.loads(answer.body)["code"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON;charset=UTF-8",
        "application/cloudevents+json",
        "application/cloudevents+json; charset=utf-8",
        "application/vnd.github+json",
        "application/*+json",  # what the document lists, sent literally by a fuzzer
    ],
)
def test_json_content_types_are_read(content_type: str) -> None:
    assert head(content_type) is None


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain; charset=utf-8",
        "text/json",
        "application/x-json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "application/jsonp",
        "",
    ],
)
def test_everything_else_is_415(content_type: str | None) -> None:
    assert head(content_type) == (415, "unsupported_media_type")


def test_the_415_says_what_to_send() -> None:
    headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/x-www-form-urlencoded"})
    request = Request("POST", "/webhooks/open", CIMultiDictProxy(headers), "127.0.0.1", "1.1")
    answer = Gateway(CONFIG, cast(BatchingKafkaWriter, None)).check_head(request)
    assert answer is not None
    detail = orjson.loads(answer.body)["detail"]
    assert "'application/x-www-form-urlencoded' is not accepted" in detail
    assert "application/json" in detail
    assert "GitHub" in detail
    missing = Request("POST", "/webhooks/open", CIMultiDictProxy(CIMultiDict()), None, "1.1")
    answer = Gateway(CONFIG, cast(BatchingKafkaWriter, None)).check_head(missing)
    assert answer is not None
    assert "Content-Type header is missing" in orjson.loads(answer.body)["detail"]


def test_the_document_lists_the_accepted_types_and_they_are_read() -> None:
    for name in SOURCES:
        body = DOCUMENT["paths"][f"/webhooks/{name}"]["post"]["requestBody"]
        assert tuple(body["content"]) == ACCEPTED_MEDIA_TYPES
        assert "415" in body["description"]
    for media in ACCEPTED_MEDIA_TYPES:
        assert head(media) is None
        assert head(media.replace("*", "cloudevents")) is None


def body_schema(source: str) -> dict[str, Any]:
    content = DOCUMENT["paths"][f"/webhooks/{source}"]["post"]["requestBody"]["content"]
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


def test_each_source_declares_its_partition_key_as_required() -> None:
    assert body_schema("open") == {}
    flat = body_schema("flat")
    assert flat["required"] == ["customer_id"]
    assert flat["properties"]["customer_id"]["type"] == ["string", "integer"]
    deep = body_schema("deep")
    assert deep["required"] == ["customer"]
    assert deep["properties"]["customer"]["required"] == ["id"]
    assert deep["properties"]["customer"]["properties"]["id"]["type"] == ["string", "integer"]
    assert body_schema("signed")["required"] == ["repository"]


def test_only_the_sources_own_signature_headers_are_parameters() -> None:
    signed = DOCUMENT["paths"]["/webhooks/signed"]["post"]["parameters"]
    assert {p["name"] for p in signed} == {
        "X-Hub-Signature-256",
        "X-GitHub-Delivery",
        "X-GitHub-Event",
    }
    assert DOCUMENT["paths"]["/webhooks/open"]["post"]["parameters"] == []


def test_any_name_is_documented_with_its_404() -> None:
    any_name = DOCUMENT["paths"]["/webhooks/{source}"]["post"]
    assert any_name["parameters"][0]["name"] == "source"
    assert "404" in any_name["responses"]
    codes = any_name["responses"]["404"]["content"]["application/problem+json"]["schema"]
    assert "unknown_source" in codes["allOf"][1]["properties"]["code"]["enum"]
    assert set(DOCUMENT["paths"]["/webhooks/flat"]["post"]["responses"]) < set(
        any_name["responses"]
    )


@pytest.mark.parametrize(
    "key",
    [
        *("cus_1", 42, 0, -7, 2**64 - 1, -(2**63), "x" * 300, 3.0, -0.0),  # accepted
        *(2**64, -(2**63) - 1, 2**70),  # read as floats by the JSON parser: refused
        *(None, 1.5, -0.25, 1e300, True, False, {"a": 1}, [1], ""),
    ],
)
@pytest.mark.parametrize("source", ["flat", "deep"])
def test_the_body_schema_accepts_exactly_what_the_gateway_accepts(source: str, key: Any) -> None:
    payload: dict[str, Any] = (
        {"customer_id": key, "other": 1} if source == "flat" else {"customer": {"id": key}}
    )
    valid = jsonschema.Draft202012Validator(body_schema(source)).is_valid(payload)
    body = json.dumps(payload).encode()
    refusal: str | None = None
    try:
        # Parsed as the gateway parses it (streams.gateway.routes._encode).
        encode_event(SOURCES[source], {}, body, orjson.loads(body), forwarded_headers=())
    except InvalidPayload as exc:
        refusal = exc.code
    assert refusal == (None if valid else "invalid_partition_key"), (key, valid, refusal)


@pytest.mark.parametrize("payload", [{}, {"customer": {}}, {"customer": "cus_1"}, [], "text"])
def test_a_body_without_the_key_is_refused_by_both(payload: Any) -> None:
    assert not jsonschema.Draft202012Validator(body_schema("deep")).is_valid(payload)
    with pytest.raises(InvalidPayload) as caught:
        encode_event(SOURCES["deep"], {}, orjson.dumps(payload), payload, forwarded_headers=())
    assert caught.value.code == "missing_partition_key"
