"""Sender presets end to end on the real broker: requests signed by the senders' own SDKs
(Twilio, Slack, HubSpot, Paddle) or as GitLab and Shopify document, posted to a running
gateway, found on the events topic with the data the docs promise (a form's fields as an
object); a form to a JSON-only source is still 415 and writes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import pytest
import pytest_asyncio
from hubspot.utils.signature import Signature as HubSpotSignature  # type: ignore[import-untyped]
from paddle_billing.Notifications.PaddleSignature import PaddleSignature  # type: ignore[import-untyped]
from slack_sdk.signature import SignatureVerifier as SlackVerifier
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from schemas.config import HookstreamConfig
from schemas.config_loader import load_config
from schemas.topics import Topics
from streams.gateway.server import running_gateway
from tests.integration.test_cli_errors import HOOKSTREAM
from tests.support.kafka import read_all

pytestmark = pytest.mark.asyncio(loop_scope="module")
PUBLIC = "https://hooks.example.com/webhooks"
SECRETS = {
    "P_TWILIO": "twilio-auth-token",
    "P_SLACK": "8f742231b10e8888abcd99yyyzzz85a5",
    "P_HUBSPOT": "hubspot-client-secret",
    "P_PADDLE": "pdl_ntfset_secret",
    "P_GITLAB": "gitlab-token",
    "P_SHOPIFY": "shopify-secret",
    "P_ZENDESK": "zendesk-signing-secret",
    "P_INTERCOM": "intercom-client-secret",
    "P_LINEAR": "lin_wh_secret",
    "P_SQUARE": "square-signature-key",
}
FORM = "application/x-www-form-urlencoded"
CONFIG = """
version: 1
kafka: {{bootstrap_servers: {bootstrap}, topic_prefix: {prefix}, partitions: 2}}
gateway: {{host: 127.0.0.1, port: 0}}
sources:
  - name: twilio
    signature: {{scheme: twilio, secret_env: P_TWILIO, url: "{public}/twilio"}}
  - name: slack
    signature: {{scheme: slack, secret_env: P_SLACK}}
  - name: hubspot
    signature: {{scheme: hubspot, secret_env: P_HUBSPOT, url: "{public}/hubspot"}}
  - name: paddle
    signature: {{scheme: paddle, secret_env: P_PADDLE}}
  - name: gitlab
    signature: {{scheme: gitlab, secret_env: P_GITLAB}}
  - name: shopify
    signature: {{scheme: shopify, secret_env: P_SHOPIFY}}
  - name: zendesk
    signature: {{scheme: zendesk, secret_env: P_ZENDESK}}
  - name: intercom
    signature: {{scheme: intercom, secret_env: P_INTERCOM}}
  - name: linear
    signature: {{scheme: linear, secret_env: P_LINEAR}}
  - name: square
    signature: {{scheme: square, secret_env: P_SQUARE, url: "{public}/square"}}
"""


class Gateway:
    def __init__(
        self, url: str, path: Path, config: HookstreamConfig, session: aiohttp.ClientSession
    ) -> None:
        self.url, self.path, self.config, self.session = url, path, config, session

    async def post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        async with self.session.post(f"{self.url}{path}", data=body, headers=headers) as answer:
            return answer.status, await answer.json(content_type=None)

    async def events(self) -> dict[str, dict[str, Any]]:
        """Every event on the topic, by id."""
        topic = Topics(self.config.kafka.topic_prefix).events
        records = await read_all(self.config.kafka.bootstrap_servers, topic)
        return {r.json()["id"]: r.json() for r in records}


def write_config(directory: Path, bootstrap: str) -> Path:
    path = directory / "hookstream.yaml"
    prefix = f"t{uuid.uuid4().hex[:10]}"
    path.write_text(CONFIG.format(bootstrap=bootstrap, prefix=prefix, public=PUBLIC))
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    path = write_config(tmp_path_factory.mktemp("presets"), kafka_bootstrap)
    config = load_config(path, env=SECRETS)
    async with (
        running_gateway(config, port=0) as (_, url),
        aiohttp.ClientSession() as session,
    ):
        yield Gateway(url, path, config, session)


async def test_presets_signed_by_the_senders_sdks_reach_the_events_topic(
    gateway: Gateway,
) -> None:
    now = int(time.time())
    sent: dict[str, tuple[int, dict[str, Any]]] = {}

    # Twilio, a form: signed by Twilio's RequestValidator over the public URL and the fields.
    token = f"tw-{uuid.uuid4().hex}"
    fields = {"MessageSid": "SM1", "From": "+15551230000", "Body": "hello & bye"}
    form = urlencode(fields).encode()
    twilio_sig = RequestValidator(SECRETS["P_TWILIO"]).compute_signature(f"{PUBLIC}/twilio", fields)
    sent[token] = await gateway.post(
        "/webhooks/twilio",
        form,
        {
            "X-Twilio-Signature": twilio_sig,
            "I-Twilio-Idempotency-Token": token,
            "Content-Type": FORM,
        },
    )

    # Twilio, JSON: the body's SHA-256 in the query, the URL with it signed.
    json_token = f"tw-{uuid.uuid4().hex}"
    body = orjson.dumps({"status": "delivered", "sid": "SM2"})
    query = f"bodySHA256={hashlib.sha256(body).hexdigest()}"
    json_sig = RequestValidator(SECRETS["P_TWILIO"]).compute_signature(
        f"{PUBLIC}/twilio?{query}", {}
    )
    sent[json_token] = await gateway.post(
        f"/webhooks/twilio?{query}",
        body,
        {
            "X-Twilio-Signature": json_sig,
            "I-Twilio-Idempotency-Token": json_token,
            "Content-Type": "application/json",
        },
    )

    # Slack, a slash command's form, signed by slack_sdk; no delivery id: the fields' hash.
    slack_fields = {"team_id": "T1", "command": "/ticket", "text": uuid.uuid4().hex}
    slack_body = urlencode(slack_fields).encode()
    slack_sig = SlackVerifier(SECRETS["P_SLACK"]).generate_signature(
        timestamp=str(now), body=slack_body
    )
    slack_id = "sha256:" + hashlib.sha256(orjson.dumps(slack_fields)).hexdigest()
    sent[slack_id] = await gateway.post(
        "/webhooks/slack",
        slack_body,
        {
            "X-Slack-Signature": str(slack_sig),
            "X-Slack-Request-Timestamp": str(now),
            "Content-Type": FORM,
        },
    )

    # HubSpot v3, with a query: signed by hubspot-api-client over method, URI, body, time.
    hub_body = orjson.dumps(
        [{"eventId": uuid.uuid4().int % 10**9, "subscriptionType": "contact.creation"}]
    )
    hub_ts = str(now * 1000)
    hub_sig = HubSpotSignature.get_signature(
        SECRETS["P_HUBSPOT"],
        hub_body.decode(),
        "v3",
        http_uri=f"{PUBLIC}/hubspot?portal=7",
        timestamp=hub_ts,
    )
    hub_id = "sha256:" + hashlib.sha256(hub_body).hexdigest()
    sent[hub_id] = await gateway.post(
        "/webhooks/hubspot?portal=7",
        hub_body,
        {
            "X-HubSpot-Signature-v3": hub_sig,
            "X-HubSpot-Request-Timestamp": hub_ts,
            "Content-Type": "application/json",
        },
    )

    # Paddle: ts=…;h1=… with the SDK's HMAC of "<ts>:<body>".
    paddle_id = f"evt_{uuid.uuid4().hex}"
    paddle_body = orjson.dumps({"event_id": paddle_id, "event_type": "transaction.completed"})
    h1 = PaddleSignature.calculate_hmac(
        SECRETS["P_PADDLE"], f"{now}:".encode() + paddle_body
    ).hexdigest()
    sent[paddle_id] = await gateway.post(
        "/webhooks/paddle",
        paddle_body,
        {"Paddle-Signature": f"ts={now};h1={h1}", "Content-Type": "application/json"},
    )

    # GitLab: the token itself; Shopify: base64 HMAC of the body (as their docs show).
    gitlab_id = f"gl-{uuid.uuid4().hex}"
    sent[gitlab_id] = await gateway.post(
        "/webhooks/gitlab",
        b'{"object_kind": "push"}',
        {
            "X-Gitlab-Token": SECRETS["P_GITLAB"],
            "X-Gitlab-Event": "Push Hook",
            "Idempotency-Key": gitlab_id,
            "Content-Type": "application/json",
        },
    )
    shop_id = f"sh-{uuid.uuid4().hex}"
    shop_body = b'{"id": 820982911946154500, "total_price": "10.00"}'
    shop_sig = base64.b64encode(
        hmac.new(SECRETS["P_SHOPIFY"].encode(), shop_body, hashlib.sha256).digest()
    )
    sent[shop_id] = await gateway.post(
        "/webhooks/shopify",
        shop_body,
        {
            "X-Shopify-Hmac-Sha256": shop_sig.decode(),
            "X-Shopify-Webhook-Id": shop_id,
            "X-Shopify-Topic": "orders/create",
            "Content-Type": "application/json",
        },
    )

    for event_id, (status, answer) in sent.items():
        assert (status, answer["id"]) == (202, event_id), answer
    events = await gateway.events()
    assert set(sent) <= set(events)
    assert events[token]["data"] == fields  # a form is its fields, as an object
    assert events[json_token]["data"] == {"status": "delivered", "sid": "SM2"}
    assert events[slack_id]["data"] == slack_fields
    assert events[paddle_id]["type"] == "transaction.completed"
    assert events[gitlab_id]["type"] == "Push Hook"
    assert events[shop_id]["type"] == "orders/create"


async def test_forms_only_where_the_scheme_signs_them_and_forged_ones_write_nothing(
    gateway: Gateway,
) -> None:
    marker = uuid.uuid4().hex
    form = f"marker={marker}".encode()
    status, answer = await gateway.post(
        "/webhooks/shopify", form, {"X-Shopify-Hmac-Sha256": "AAAA", "Content-Type": FORM}
    )
    assert (status, answer["code"]) == (415, "unsupported_media_type")
    wrong = RequestValidator("not-the-token").compute_signature(
        f"{PUBLIC}/twilio", {"marker": marker}
    )
    status, answer = await gateway.post(
        "/webhooks/twilio", form, {"X-Twilio-Signature": wrong, "Content-Type": FORM}
    )
    assert (status, answer["code"]) == (401, "no_signature_matched")
    stale = int(time.time()) - 301
    slack_sig = SlackVerifier(SECRETS["P_SLACK"]).generate_signature(
        timestamp=str(stale), body=form
    )
    status, answer = await gateway.post(
        "/webhooks/slack",
        form,
        {
            "X-Slack-Signature": str(slack_sig),
            "X-Slack-Request-Timestamp": str(stale),
            "Content-Type": FORM,
        },
    )
    assert (status, answer["code"]) == (401, "timestamp_out_of_window")
    events = await gateway.events()
    assert not [e for e in events.values() if marker in orjson.dumps(e["data"]).decode()]


async def shell(*args: str, timeout_s: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **SECRETS},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("source", "content_type"),
    [
        ("twilio", FORM),
        ("twilio", "application/json"),
        ("slack", FORM),
        ("slack", "application/json"),
        ("zendesk", "application/json"),
        ("hubspot", "application/json"),
        ("shopify", "application/json"),
        ("intercom", "application/json"),
        ("gitlab", "application/json"),
        ("linear", "application/json"),
        ("paddle", "application/json"),
        ("square", "application/json"),
    ],
)
async def test_hookstream_sign_prints_a_curl_command_each_preset_accepts(
    gateway: Gateway, tmp_path: Path, source: str, content_type: str
) -> None:
    marker = uuid.uuid4().hex
    body = tmp_path / "body"
    if content_type == FORM:
        body.write_bytes(urlencode({"marker": marker, "Body": "a b&c"}).encode())
    else:  # Linear's time is in the body, in milliseconds
        body.write_bytes(
            orjson.dumps({"marker": marker, "webhookTimestamp": time.time_ns() // 10**6})
        )
    code, command, err = await shell(
        HOOKSTREAM, "sign", "-c", str(gateway.path), "--source", source,
        "--url", gateway.url, "--content-type", content_type, str(body),
    )  # fmt: skip
    assert code == 0, err
    code, status, err = await shell(
        "sh", "-c", command.rstrip() + " -o /dev/null -w '%{http_code}'"
    )
    assert (code, status) == (0, "202"), err
    events = await gateway.events()
    found = [e for e in events.values() if e["source"] == source and marker in str(e["data"])]
    assert len(found) == 1


async def test_openapi_lists_each_presets_headers_and_forms_where_taken(gateway: Gateway) -> None:
    async with gateway.session.get(f"{gateway.url}/openapi.json") as answer:
        document = await answer.json()
    paths = document["paths"]

    def operation(source: str) -> dict[str, Any]:
        found: dict[str, Any] = paths[f"/webhooks/{source}"]["post"]
        return found

    def headers(source: str) -> set[str]:
        return {p["name"] for p in operation(source)["parameters"]}

    assert {"X-Twilio-Signature", "I-Twilio-Idempotency-Token"} <= headers("twilio")
    assert {"X-Slack-Signature", "X-Slack-Request-Timestamp"} <= headers("slack")
    assert {"X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"} <= headers("hubspot")
    assert "Paddle-Signature" in headers("paddle")
    assert "X-Gitlab-Token" in headers("gitlab")
    assert FORM in operation("twilio")["requestBody"]["content"]
    assert FORM in operation("slack")["requestBody"]["content"]
    assert FORM not in operation("shopify")["requestBody"]["content"]


async def test_slacks_signed_url_verification_is_answered_with_its_challenge(
    gateway: Gateway,
) -> None:
    challenge = uuid.uuid4().hex
    body = orjson.dumps({"token": "t", "challenge": challenge, "type": "url_verification"})
    now = str(int(time.time()))
    signature = SlackVerifier(SECRETS["P_SLACK"]).generate_signature(timestamp=now, body=body)
    headers = {"X-Slack-Request-Timestamp": now, "Content-Type": "application/json"}
    status, answer = await gateway.post(
        "/webhooks/slack", body, {**headers, "X-Slack-Signature": str(signature)}
    )
    assert (status, answer) == (200, {"challenge": challenge})
    forged = await gateway.post("/webhooks/slack", body, {**headers, "X-Slack-Signature": "v0=00"})
    assert forged[0] == 401
    events = await gateway.events()
    assert not [e for e in events.values() if challenge in orjson.dumps(e["data"]).decode()]
    async with gateway.session.get(f"{gateway.url}/openapi.json") as reply:
        document = await reply.json()
    assert "200" in document["paths"]["/webhooks/slack"]["post"]["responses"]
    assert "200" not in document["paths"]["/webhooks/twilio"]["post"]["responses"]
