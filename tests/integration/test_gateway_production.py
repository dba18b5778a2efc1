"""The gateway's production features on the real broker: every signature scheme end to end,
rotation, rate limits, allowlists, readiness, metrics, OpenAPI and TLS.

The gateway runs in the test's event loop (``running_gateway``: the same code ``hookstream
gateway`` runs), so each case is one HTTP request; the topic is read back to prove what a 2xx
claims and what a refusal must not have written.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from schemas.config import HookstreamConfig
from schemas.topics import Topics
from streams.gateway.server import running_gateway
from streams.gateway.signatures import sign_headers
from tests.integration.gateway_config import (
    GENERIC_SECRET,
    GITHUB_SECRET,
    SECRETS,
    STRIPE_NEW,
    STRIPE_OLD,
    SW_NEW,
    SW_OLD,
    gateway_config,
    write_config_text,
)
from tests.support.broker import free_port
from tests.support.kafka import read_all
from tests.support.stack import REPO_ROOT

pytestmark = pytest.mark.asyncio(loop_scope="module")
WRONG = {
    "sw": "whsec_" + base64.b64encode(b"wrong-key-" * 3).decode(),
    "stripe": "whsec_wrong",
    "gh": "wrong",
    "generic": "wrong",
}
CURRENT = {"sw": SW_NEW, "stripe": STRIPE_NEW, "gh": GITHUB_SECRET, "generic": GENERIC_SECRET}


@dataclass
class Gateway:
    url: str
    config: HookstreamConfig
    session: aiohttp.ClientSession

    async def post(
        self, source: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], Any]:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        async with self.session.post(
            f"{self.url}/webhooks/{source}", data=body, headers=all_headers
        ) as response:
            return response.status, await response.json(content_type=None), response.headers

    def signed(
        self,
        source: str,
        body: bytes,
        *,
        secret: str | None = None,
        ts: int | None = None,
        delivery: str | None = None,
    ) -> dict[str, str]:
        config = self.config.source(source)
        assert config is not None
        headers = sign_headers(
            config.signature,
            body,
            webhook_id=delivery,
            timestamp=ts,
            secrets=(secret or CURRENT[source],),
        )
        if source == "generic" and delivery:
            headers["X-Delivery"] = delivery
        return headers

    async def ids_on_topic(self) -> list[str]:
        topic = Topics(self.config.kafka.topic_prefix).events
        return [r.json()["id"] for r in await read_all(self.config.kafka.bootstrap_servers, topic)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    config = gateway_config(tmp_path_factory.mktemp("gwprod"), kafka_bootstrap)
    async with (
        running_gateway(config, port=0) as (_, url),
        aiohttp.ClientSession() as session,
    ):
        yield Gateway(url, config, session)


def body_for(source: str, delivery: str) -> bytes:
    # Stripe names its delivery in the payload; the others in headers.
    return orjson.dumps({"id": delivery, "type": "thing.happened", "n": 1})


SCHEMES = ["sw", "stripe", "gh", "generic"]


@pytest.mark.parametrize("source", SCHEMES)
async def test_each_scheme_end_to_end_with_the_senders_delivery_id(
    gateway: Gateway, source: str
) -> None:
    delivery = f"d-{uuid.uuid4().hex}"
    body = body_for(source, delivery)
    status, answer, _ = await gateway.post(
        source, body, gateway.signed(source, body, delivery=delivery)
    )
    assert status == 202, answer
    assert answer["id"] == delivery
    assert delivery in await gateway.ids_on_topic()


@pytest.mark.parametrize(("source", "old"), [("sw", SW_OLD), ("stripe", STRIPE_OLD)])
async def test_the_previous_secret_still_works_during_rotation(
    gateway: Gateway, source: str, old: str
) -> None:
    delivery = f"d-{uuid.uuid4().hex}"
    body = body_for(source, delivery)
    headers = gateway.signed(source, body, secret=old, delivery=delivery)
    status, answer, _ = await gateway.post(source, body, headers)
    assert status == 202, answer


def refusal_cases() -> list[tuple[str, str, str]]:
    cases = []
    for source in SCHEMES:
        cases += [
            (source, "tampered", "no_signature_matched"),
            (source, "wrong", "no_signature_matched"),
        ]
        cases += [(source, "missing", "missing_signature")]
        cases += [(source, "malformed", "malformed_signature")]
        if source != "gh":  # GitHub signs no timestamp
            cases += [(source, "old", "timestamp_out_of_window")]
            cases += [(source, "future", "timestamp_out_of_window")]
    return cases


MALFORMED = {
    "sw": ("webhook-signature", "v1;abc"),
    "stripe": ("Stripe-Signature", "v2=00,x"),
    "gh": ("X-Hub-Signature-256", "md5=00"),
    "generic": ("X-Sig", "not base64!"),
}
SIGNATURE_HEADER = {
    "sw": "webhook-signature",
    "stripe": "Stripe-Signature",
    "gh": "X-Hub-Signature-256",
    "generic": "X-Sig",
}


@pytest.mark.parametrize(("source", "case", "code"), refusal_cases())
async def test_refusals_name_the_check_and_write_nothing(
    gateway: Gateway, source: str, case: str, code: str
) -> None:
    delivery = f"r-{uuid.uuid4().hex}"
    body = body_for(source, delivery)
    now = int(time.time())
    headers = gateway.signed(
        source,
        body,
        delivery=delivery,
        secret=WRONG[source] if case == "wrong" else None,
        ts={"old": now - 400, "future": now + 400}.get(case, now),
    )
    if case == "tampered":
        body = body.replace(b'"n":1', b'"n":2')
    elif case == "missing":
        del headers[SIGNATURE_HEADER[source]]
    elif case == "malformed":
        name, value = MALFORMED[source]
        headers[name] = value
    status, answer, response_headers = await gateway.post(source, body, headers)
    assert status == 401
    assert answer["code"] == code
    assert response_headers["Content-Type"].startswith("application/problem+json")
    text = orjson.dumps(answer).decode()
    for secret in (*CURRENT.values(), *WRONG.values(), SW_OLD, STRIPE_OLD):
        assert secret not in text
    assert delivery not in await gateway.ids_on_topic()


async def test_rate_limit_answers_429_with_retry_after(gateway: Gateway) -> None:
    statuses = []
    for _ in range(4):
        status, answer, headers = await gateway.post("limited", b'{"n": 1}')
        statuses.append(status)
    assert statuses[:2] == [202, 202]
    assert statuses[2:] == [429, 429]
    assert answer["code"] == "rate_limited"
    assert int(headers["Retry-After"]) >= 1
    # Only the limited source is limited.
    assert (await gateway.post("open", b'{"n": 1}'))[0] == 202


@pytest.mark.parametrize(
    ("forwarded", "status"),
    [
        (None, 403),  # the test client is 127.0.0.1, not in the allowlist
        ("203.0.113.9", 202),  # 127.0.0.1 is a trusted proxy: its header is believed
        ("203.0.113.9, 198.51.100.1", 403),  # the right-most untrusted hop is the client
        ("198.51.100.1, 203.0.113.9", 202),
        ("2001:db8::5", 202),
        ("garbage", 403),
    ],
)
async def test_ip_allowlist_behind_a_trusted_proxy(
    gateway: Gateway, forwarded: str | None, status: int
) -> None:
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    got, answer, _ = await gateway.post("guarded", b'{"n": 1}', headers)
    assert got == status, answer
    if status == 403:
        assert answer["code"] == "ip_not_allowed"


async def test_health_readiness_and_metrics(gateway: Gateway) -> None:
    async with gateway.session.get(f"{gateway.url}/healthz") as response:
        assert response.status == 200
    async with gateway.session.get(f"{gateway.url}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"
    await gateway.post("open", b'{"n": 1}')
    await gateway.post("sw", b'{"n": 1}')  # unsigned: refused
    async with gateway.session.get(f"{gateway.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert 'hookstream_gateway_requests_total{source="open",status="202"}' in text
    assert 'hookstream_gateway_refusals_total{reason="missing_webhook_id",source="sw"}' in text
    assert "hookstream_gateway_produce_seconds_bucket" in text
    assert "hookstream_gateway_in_flight_writes 0.0" in text


async def test_openapi_documents_every_route_and_error(gateway: Gateway) -> None:
    async with gateway.session.get(f"{gateway.url}/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    routes = {(path, method) for path, item in document["paths"].items() for method in item}
    sources = [s.name for s in gateway.config.sources]
    assert routes == {
        *((f"/webhooks/{name}", "post") for name in sources),
        ("/webhooks/{source}", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    }
    for name in sources:
        webhook = document["paths"][f"/webhooks/{name}"]["post"]
        assert set(webhook["responses"]) == {
            "202",
            "400",
            "401",
            "403",
            "408",
            "413",
            "415",
            "429",
            "431",
            "503",
        }
    assert "404" in document["paths"]["/webhooks/{source}"]["post"]["responses"]
    keyed = document["paths"]["/webhooks/keyed"]["post"]["requestBody"]["content"]
    assert keyed["application/json"]["schema"]["required"] == ["customer"]


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/nope", 404, None),
        ("POST", "/webhooks/", 404, None),
        ("POST", "/webhooks/sw/extra", 404, None),
        ("GET", "/webhooks/sw", 405, "POST"),
        ("PUT", "/webhooks/sw", 405, "POST"),
        ("POST", "/healthz", 405, "GET, HEAD"),
        ("DELETE", "/metrics", 405, "GET, HEAD"),
    ],
)
async def test_unknown_route_or_method_is_problem_json(
    gateway: Gateway, method: str, path: str, status: int, allow: str | None
) -> None:
    async with gateway.session.request(method, f"{gateway.url}{path}") as response:
        assert response.status == status
        problem = await response.json(content_type=None)
        assert response.headers.get("Allow") == allow
    assert problem["status"] == status
    assert problem["code"] == ("not_found" if status == 404 else "method_not_allowed")


async def test_a_gzip_body_is_held_to_the_limit_once_decompressed(gateway: Gateway) -> None:
    limit = gateway.config.gateway.max_body_bytes
    delivery = f"d-{uuid.uuid4()}"
    plain = orjson.dumps({"id": delivery, "pad": " " * (3 * limit)})
    packed = gzip.compress(plain)
    assert len(packed) < limit < len(plain)  # small on the wire, over the limit unpacked
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with gateway.session.post(
        f"{gateway.url}/webhooks/open", data=packed, headers=headers
    ) as response:
        assert response.status == 413
        problem = await response.json(content_type=None)
    assert problem["code"] == "payload_too_large"
    assert "decompressed" in problem["detail"]
    # Within the limit once unpacked, the same encoding is accepted.
    small = orjson.dumps({"id": f"{delivery}-small", "pad": " " * 100})
    async with gateway.session.post(
        f"{gateway.url}/webhooks/open", data=gzip.compress(small), headers=headers
    ) as response:
        assert response.status == 202, await response.text()
    # A body that arrives after the headers (here: after 100 Continue) is read by aiohttp,
    # whose own limit stops it unpacking: the same 413, with the same code.
    head = (
        "POST /webhooks/open HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Encoding: gzip\r\nContent-Length: {len(packed)}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    interim, final = await raw_exchange(gateway.url, head, packed)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    assert final.startswith(b"HTTP/1.1 413"), final
    assert b'"payload_too_large"' in final


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_that_stops_half_way_is_408_after_the_timeout(
    kafka_bootstrap: str, tmp_path: Path, framing: str
) -> None:
    config = gateway_config(tmp_path, kafka_bootstrap, gateway_extra="  body_timeout_s: 0.5\n")
    if framing == "content-length":
        head = "Content-Length: 100\r\n\r\n"
        part = b'{"n": 1, "pad": "'  # 17 of the 100 bytes announced
    else:
        head = "Transfer-Encoding: chunked\r\n\r\n"
        part = b"11\r\n" + b'{"n": 1, "pad": "' + b"\r\n"  # one chunk, then nothing
    async with running_gateway(config, port=0) as (_, url):
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                b"POST /webhooks/open HTTP/1.1\r\nHost: gw\r\n"
                b"Content-Type: application/json\r\n" + head.encode() + part
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(4096), timeout=10)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"body_timeout"' in answer
    assert b"0.5 s" in answer


async def test_a_sender_that_never_finishes_its_headers_is_disconnected(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = gateway_config(tmp_path, kafka_bootstrap, gateway_extra="  idle_timeout_s: 0.5\n")
    async with running_gateway(config, port=0) as (_, url):
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"POST /webhooks/open HTTP/1.1\r\nHost: gw\r\nContent-Ty")  # slowloris
            await writer.drain()
            closed_by_server = await asyncio.wait_for(reader.read(4096), timeout=10)
        finally:
            writer.close()
    assert closed_by_server == b""  # end of stream: the gateway let the connection go


async def test_head_of_a_read_route_answers_without_a_body(gateway: Gateway) -> None:
    async with gateway.session.head(f"{gateway.url}/healthz") as response:
        assert response.status == 200
        assert await response.read() == b""


async def raw_exchange(url: str, head: bytes, body: bytes) -> tuple[bytes, bytes]:
    """Send ``head``, read the interim answer (if any) before sending ``body``, then the rest.

    What curl does for bodies over 1 KiB: ``Expect: 100-continue``, then the body only after
    ``100 Continue`` (or not at all, when the final answer comes first).
    """
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        if interim.startswith(b"HTTP/1.1 100"):
            writer.write(body)
            await writer.drain()
            final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        else:
            final, interim = interim, b""
        length = next(
            int(line.split(b":")[1])
            for line in final.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return interim, final + await reader.readexactly(length)
    finally:
        writer.close()


async def test_expect_100_continue_is_answered_after_the_checks(gateway: Gateway) -> None:
    delivery = f"d-{uuid.uuid4()}"
    body = body_for("sw", delivery) + b" " * 2048  # over 1 KiB, as curl would send it
    signed = gateway.signed("sw", body, delivery=delivery)
    fields = "".join(f"{name}: {value}\r\n" for name, value in signed.items())
    head = (
        f"POST /webhooks/sw HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n{fields}\r\n"
    ).encode()
    interim, final = await raw_exchange(gateway.url, head, body)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    assert final.startswith(b"HTTP/1.1 202"), final
    assert delivery in await gateway.ids_on_topic()


async def test_expect_100_continue_is_not_sent_for_a_refused_size(gateway: Gateway) -> None:
    limit = gateway.config.gateway.max_body_bytes
    head = (
        f"POST /webhooks/open HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Length: {limit + 1}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    interim, final = await raw_exchange(gateway.url, head, b"")
    assert interim == b""  # the sender never had to send the body
    assert final.startswith(b"HTTP/1.1 413"), final
    assert b'"payload_too_large"' in final


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_when_given_a_certificate_and_key(kafka_bootstrap: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = gateway_config(
        tmp_path,
        kafka_bootstrap,
        gateway_extra=f"  tls_cert_file: {cert}\n  tls_key_file: {key}\n",
    )
    trusting = ssl.create_default_context(cafile=str(cert))
    async with running_gateway(config, port=0) as (_, url), aiohttp.ClientSession() as session:
        assert url.startswith("https://")
        async with session.post(
            f"{url}/webhooks/open",
            data=b'{"n": 1}',
            ssl=trusting,
            headers={"Content-Type": "application/json"},
        ) as response:
            assert response.status == 202
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with session.get(f"{url}/healthz"):
                pass  # the system trust store does not know our certificate
        plain = url.replace("https://", "http://")
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{plain}/healthz"):
                pass


@pytest.mark.parametrize("source", ["sw", "stripe", "gh", "generic"])
async def test_hookstream_sign_prints_headers_the_gateway_accepts(
    gateway: Gateway, source: str, tmp_path: Path
) -> None:
    config_path = tmp_path / "sign.yaml"
    config_path.write_text(
        write_config_text(gateway.config.kafka.bootstrap_servers, gateway.config.kafka.topic_prefix)
    )
    body = body_for(source, f"d-{uuid.uuid4().hex}")
    (tmp_path / "body.json").write_bytes(body)
    env = {**os.environ, **SECRETS}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.cli.main",
        "sign",
        "-c",
        str(config_path),
        "--source",
        source,
        "--headers-only",
        str(tmp_path / "body.json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    headers = dict(line.split(": ", 1) for line in out.decode().splitlines())
    status, answer, _ = await gateway.post(source, body, headers)
    assert status == 202, answer


async def test_reuse_port_lets_two_gateways_share_one_port(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = gateway_config(tmp_path, kafka_bootstrap, gateway_extra="  reuse_port: true\n")
    port = free_port()
    async with (
        running_gateway(config, port=port) as (first, url),
        running_gateway(config, port=port) as (second, second_url),
    ):
        assert url == second_url
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection per request
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(40):
                async with session.post(
                    f"{url}/webhooks/open",
                    data=b'{"n": 1}',
                    headers={"Content-Type": "application/json"},
                ) as response:
                    assert response.status == 202
        served = [server.requests_count for server in (first, second)]
    # The kernel spreads new connections over both sockets: all 40 on one has odds of 2^-39.
    assert len(served) == 2
    assert sum(served) == 40
    assert min(served) > 0, served


async def test_without_reuse_port_a_second_gateway_cannot_take_the_port(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = gateway_config(tmp_path, kafka_bootstrap)
    port = free_port()
    async with running_gateway(config, port=port):
        with pytest.raises(OSError, match="address already in use"):
            async with running_gateway(config, port=port):
                pass
