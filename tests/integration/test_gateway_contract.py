"""The gateway's contract over the wire (issue 17): which content types are read, which
partition keys are taken, and what every refusal says; against the real broker.

The example config's ``helpdesk`` source is signed and keyed by ``customer_id``.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import pytest_asyncio

from tests.support.kafka import read_all
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir: Path = tmp_path_factory.mktemp("gwcontract")
    async with running_stack(kafka_bootstrap, workdir, roles=("gateway",)) as running:
        yield running


def ticket(key: Any = "cus_001") -> dict[str, Any]:
    return {"event": "ticket.created", "customer_id": key, "message": "hello"}


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/cloudevents+json",
        "application/vnd.helpdesk+json; charset=UTF-8",
    ],
)
async def test_json_content_types_are_accepted(gateway: Stack, content_type: str) -> None:
    webhook_id = f"wh-{uuid.uuid4().hex}"
    status, answer, _ = await gateway.post(
        "helpdesk", ticket(), webhook_id=webhook_id, content_type=content_type
    )
    assert status == 202, answer
    assert answer["id"] == webhook_id


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain; charset=utf-8", "text/json", "multipart/form-data; boundary=b"],
)
async def test_other_content_types_are_415(gateway: Stack, content_type: str) -> None:
    status, answer, _ = await gateway.post("helpdesk", ticket(), content_type=content_type)
    assert (status, answer["code"]) == (415, "unsupported_media_type")
    assert "send application/json" in answer["detail"]


async def test_no_content_type_is_415(gateway: Stack) -> None:
    """Raw bytes: HTTP clients add a Content-Type of their own when none is given."""
    body = orjson.dumps(ticket())
    signed = gateway.signed_headers("helpdesk", body, webhook_id=f"wh-{uuid.uuid4().hex}")
    url = urlsplit(gateway.gateway_url)
    assert url.hostname is not None
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    head = "".join(f"{name}: {value}\r\n" for name, value in signed.items())
    writer.write(
        f"POST /webhooks/helpdesk HTTP/1.1\r\nHost: gw\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{head}\r\n".encode()
        + body
    )
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"415", answer
    problem = orjson.loads(rest.partition(b"\r\n\r\n")[2])
    assert "Content-Type header is missing" in problem["detail"]


@pytest.mark.parametrize(("key", "record_key"), [("cus_042", b"cus_042"), (42, b"42")])
async def test_string_and_integer_keys_are_the_record_key(
    gateway: Stack, key: Any, record_key: bytes
) -> None:
    webhook_id = f"wh-{uuid.uuid4().hex}"
    status, answer, _ = await gateway.post("helpdesk", ticket(key), webhook_id=webhook_id)
    assert status == 202, answer
    records = [
        r
        for r in await read_all(gateway.bootstrap, gateway.topic("events"))
        if r.json()["id"] == webhook_id
    ]
    assert [(r.key, r.json()["partitionkey"]) for r in records] == [
        (record_key, record_key.decode())
    ]


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (None, "null"),
        (1.5, "a float"),
        (True, "a boolean"),
        ({"id": "cus_1"}, "an object"),
        (["cus_1"], "a list"),
        ("", "an empty string"),
    ],
)
async def test_other_keys_are_400_naming_the_field_and_type(
    gateway: Stack, key: Any, kind: str
) -> None:
    status, answer, _ = await gateway.post("helpdesk", ticket(key))
    assert (status, answer["code"]) == (400, "invalid_partition_key"), answer
    assert f"field 'customer_id' (the source's partition_key) is {kind};" in answer["detail"]


async def test_an_absent_key_is_400_missing(gateway: Stack) -> None:
    body = {"event": "ticket.created", "message": "no customer"}
    status, answer, _ = await gateway.post("helpdesk", body)
    assert (status, answer["code"]) == (400, "missing_partition_key")
    assert "has no field 'customer_id'" in answer["detail"]
