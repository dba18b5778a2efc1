"""The sender presets against what their senders publish: a documented example, or the
sender's official SDK (dev extras, as test oracles), never only against our own signer.

Each preset has: the oracle accepting what ``sign_request`` produces (or our verifier
accepting the sender's published example), a wrong secret refused, and for timestamped
presets a stale timestamp refused. Where a sender publishes no vector and ships no verifier on
PyPI, the oracle is the documented formula computed with the standard library's ``hmac``
(not the gateway's own HMAC code), and the comment says so.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hubspot.utils.signature import Signature as HubSpotSignature  # type: ignore[import-untyped]
from multidict import CIMultiDict
from paddle_billing.Notifications.PaddleSignature import PaddleSignature  # type: ignore[import-untyped]
from paddle_billing.Notifications.Secret import Secret as PaddleSecret  # type: ignore[import-untyped]
from pydantic import SecretStr
from slack_sdk.signature import SignatureVerifier as SlackVerifier
from square.utils.webhooks_helper import verify_signature as square_verify
from twilio.request_validator import RequestValidator as TwilioValidator  # type: ignore[import-untyped]

from schemas.config_loader import load_config
from schemas.config_sources import SignatureConfig
from schemas.errors import ConfigError, InvalidPayload, SignatureError
from streams.gateway.signatures import sign_request, verify
from streams.gateway.signatures.forms import form_data
from streams.gateway.signatures.url_signed import sign_hubspot
from tests.support import oracles

SECRET = "preset-secret-do-not-echo"
BODY = b'{"id": "evt_1", "type": "ticket.created", "customer_id": "c-1"}'
NOW = 1_700_000_000
PUBLIC_URL = "https://hooks.example.com/webhooks/src"


def config(scheme: str, secret: str = SECRET, **fields: Any) -> SignatureConfig:
    return SignatureConfig(scheme=scheme, secret_env="S", secret=SecretStr(secret), **fields)  # type: ignore[arg-type]


def refused(
    cfg: SignatureConfig,
    headers: dict[str, str],
    body: bytes = BODY,
    now_s: float = NOW,
    target: bytes = b"/webhooks/src",
) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        verify(cfg, CIMultiDict(headers), body, now_s=now_s, target=target)
    text = f"{info.value} {info.value.detail!r}"
    assert SECRET not in text
    assert "other-secret" not in text
    return info.value


def accepted(
    cfg: SignatureConfig,
    headers: dict[str, str],
    body: bytes = BODY,
    now_s: float = NOW,
    target: bytes = b"/webhooks/src",
) -> None:
    verify(cfg, CIMultiDict(headers), body, now_s=now_s, target=target)


# --- Slack ---------------------------------------------------------------------------------

# Slack's published example ("Verifying requests from Slack", api.slack.com/authentication/
# verifying-requests-from-slack): a slash command's form body, its secret, time and signature.
SLACK_DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_DOC_TS = 1531420618
SLACK_DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-"
    b"collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700"
    b"885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2"
    b"c447fce8b6703c"
)
SLACK_DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_slack_accepts_slacks_published_example() -> None:
    headers = {
        "X-Slack-Request-Timestamp": str(SLACK_DOC_TS),
        "X-Slack-Signature": SLACK_DOC_SIGNATURE,
    }
    accepted(config("slack", SLACK_DOC_SECRET), headers, SLACK_DOC_BODY, now_s=SLACK_DOC_TS)
    assert refused(config("slack", "other-secret"), headers, SLACK_DOC_BODY, SLACK_DOC_TS).code == (
        "no_signature_matched"
    )


def test_slack_sdk_accepts_what_hookstream_signs_and_stale_times_are_refused() -> None:
    now = int(time.time())
    headers = sign_request(config("slack"), BODY, timestamp=now).headers
    assert SlackVerifier(SECRET).is_valid_request(BODY, headers)
    accepted(config("slack"), headers, now_s=now)
    stale = sign_request(config("slack"), BODY, timestamp=now - 301).headers
    assert not SlackVerifier(SECRET).is_valid_request(BODY, stale)  # the SDK agrees
    assert refused(config("slack"), stale, now_s=now).code == "timestamp_out_of_window"


# --- Zendesk -------------------------------------------------------------------------------


def zendesk_documented(secret: str, timestamp: str, body: bytes) -> str:
    """developer.zendesk.com/documentation/webhooks/verifying: base64(HMACSHA256(TIMESTAMP +
    BODY)), keyed by the signing secret's text, as the page's Node example computes it
    (createHmac("sha256", SIGNING_SECRET).update(timestamp + body).digest("base64")). Zendesk
    ships no verifier (no SDK on PyPI or npm verifies its webhooks) and the current page has no
    worked example, so the formula, computed with the standard library, is the oracle; the
    one published vector is checked below."""
    mac = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


# The one vector Zendesk published, on its event connectors page
# (developer.zendesk.com/documentation/event-connectors/webhooks/verifying), whose formula then
# read base64(HMACSHA256((BODY)(TIMESTAMP))). That page now gives TIMESTAMP + BODY, like the
# webhooks page, and dropped the vector.
ZENDESK_OLD_SECRET = "HRkRd4BeOAoUkfZr-mhauJT64rvBASlJRoIyPsd3zeA="
ZENDESK_OLD_BODY = b'{"say": "hello"}'
ZENDESK_OLD_TIMESTAMP = "2021-07-25T10:00:00Z"
ZENDESK_OLD_SIGNATURE = "tRDSF7URY8BLCDlaBcQ7FHu051Zk+aAB0NKMP53teMw="


def test_zendesks_withdrawn_vector_fixes_the_key_and_encoding_but_not_the_order() -> None:
    """The vector agrees with its own page's formula (BODY then TIMESTAMP), so it was no
    typo; it confirms what both pages share: the secret's text is the key (not its base64
    decoding), HMAC-SHA256, base64. The order follows the current pages (TIMESTAMP first),
    as every receiver we found does; so the preset refuses this vector, and this test says so
    rather than hide it."""
    key = ZENDESK_OLD_SECRET.encode()
    message = ZENDESK_OLD_BODY + ZENDESK_OLD_TIMESTAMP.encode()
    old = base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
    assert old == ZENDESK_OLD_SIGNATURE
    decoded_key = base64.urlsafe_b64decode(ZENDESK_OLD_SECRET)
    assert base64.b64encode(hmac.new(decoded_key, message, hashlib.sha256).digest()).decode() != (
        ZENDESK_OLD_SIGNATURE
    )
    headers = {
        "X-Zendesk-Webhook-Signature-Timestamp": ZENDESK_OLD_TIMESTAMP,
        "X-Zendesk-Webhook-Signature": ZENDESK_OLD_SIGNATURE,
    }
    moment = 1627207200  # 2021-07-25T10:00:00Z
    cfg = config("zendesk", ZENDESK_OLD_SECRET)
    assert refused(cfg, headers, ZENDESK_OLD_BODY, now_s=moment).code == "no_signature_matched"
    # The same request signed the current way is accepted.
    current = {
        **headers,
        "X-Zendesk-Webhook-Signature": zendesk_documented(
            ZENDESK_OLD_SECRET, ZENDESK_OLD_TIMESTAMP, ZENDESK_OLD_BODY
        ),
    }
    accepted(cfg, current, ZENDESK_OLD_BODY, now_s=moment)


def test_zendesk_matches_the_documented_formula_with_its_iso_timestamp() -> None:
    headers = sign_request(config("zendesk"), BODY, timestamp=NOW).headers
    moment = headers["X-Zendesk-Webhook-Signature-Timestamp"]
    assert moment == "2023-11-14T22:13:20Z"  # Zendesk's format: ISO 8601 in UTC
    assert headers["X-Zendesk-Webhook-Signature"] == zendesk_documented(SECRET, moment, BODY)
    # Zendesk's test secret from the same page, a hand-made request: accepted.
    test_secret = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
    by_hand = {
        "X-Zendesk-Webhook-Signature-Timestamp": "2023-11-14T22:13:20Z",
        "X-Zendesk-Webhook-Signature": zendesk_documented(test_secret, moment, BODY),
    }
    accepted(config("zendesk", test_secret), by_hand)
    assert refused(config("zendesk", "other-secret"), by_hand).code == "no_signature_matched"
    assert refused(config("zendesk"), headers, now_s=NOW + 301).code == "timestamp_out_of_window"


# --- HubSpot v3 ----------------------------------------------------------------------------


def test_hubspot_sdk_accepts_what_hookstream_signs_with_the_request_query() -> None:
    cfg = config("hubspot", url=PUBLIC_URL)
    now = int(time.time())
    # The query as received is part of the signed URI (HubSpot decodes %3A and friends).
    target = b"/webhooks/src?portal=62515&next=a%3Ab"
    headers = sign_hubspot(PUBLIC_URL + "?portal=62515&next=a%3Ab", SECRET, BODY, now)
    assert HubSpotSignature.is_valid(
        signature=headers["X-HubSpot-Signature-v3"],
        client_secret=SECRET,
        request_body=BODY.decode(),
        http_uri=PUBLIC_URL + "?portal=62515&next=a:b",
        signature_version="v3",
        timestamp=headers["X-HubSpot-Request-Timestamp"],
    )
    accepted(cfg, headers, now_s=now, target=target)
    assert refused(cfg, headers, now_s=now, target=b"/webhooks/src?portal=1").code == (
        "no_signature_matched"
    )
    wrong = config("hubspot", "other-secret", url=PUBLIC_URL)
    assert refused(wrong, headers, now_s=now, target=target).code == "no_signature_matched"
    assert refused(cfg, headers, now_s=now + 301, target=target).code == "timestamp_out_of_window"


def test_hubspot_accepts_a_signature_the_sdk_computed() -> None:
    now = int(time.time())
    raw_ts = str(now * 1000)
    signature = HubSpotSignature.get_signature(
        SECRET, BODY.decode(), "v3", http_uri=PUBLIC_URL, timestamp=raw_ts
    )
    headers = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": raw_ts}
    accepted(config("hubspot", url=PUBLIC_URL), headers, now_s=now)


# --- Twilio --------------------------------------------------------------------------------

# Twilio's published example (twilio.com/docs/usage/webhooks/webhooks-security): Auth Token
# 12345, this URL and these POST parameters, signature 0/KCTR6DLpKmkAf8muzZqo1nDgQ=.
TWILIO_FORM = (
    b"To=%2B18005551212&CallSid=CA1234567890ABCDE&Digits=1234&From=%2B12349013030"
    b"&Caller=%2B12349013030"
)
FORM_TYPE = "application/x-www-form-urlencoded"


def test_twilio_accepts_twilios_published_example() -> None:
    cfg = config("twilio", "12345", url="https://mycompany.com/myapp.php")
    headers = {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", "Content-Type": FORM_TYPE}
    target = b"/myapp.php?foo=1&bar=2"
    accepted(cfg, headers, TWILIO_FORM, target=target)
    # The default port written out is the same URL to Twilio (its validator tries both).
    ported = config("twilio", "12345", url="https://mycompany.com:443/myapp.php")
    accepted(ported, headers, TWILIO_FORM, target=target)
    wrong = config("twilio", "other-secret", url="https://mycompany.com/myapp.php")
    assert refused(wrong, headers, TWILIO_FORM, target=target).code == "no_signature_matched"
    tampered = TWILIO_FORM.replace(b"Digits=1234", b"Digits=9999")
    assert refused(cfg, headers, tampered, target=target).code == "no_signature_matched"


def test_twilio_sdk_validates_both_variants_hookstream_signs() -> None:
    cfg = config("twilio", url=PUBLIC_URL)
    validator = TwilioValidator(SECRET)
    form = sign_request(cfg, TWILIO_FORM, content_type=FORM_TYPE)
    assert form.query == ""
    params = dict(pair.split("=") for pair in TWILIO_FORM.decode().split("&"))
    params = {k: v.replace("%2B", "+") for k, v in params.items()}
    assert validator.validate(PUBLIC_URL, params, form.headers["X-Twilio-Signature"])
    accepted(cfg, {**form.headers, "Content-Type": FORM_TYPE}, TWILIO_FORM)
    # JSON: the body's SHA-256 goes in the query, and the URL alone is signed.
    signed = sign_request(cfg, BODY)
    assert signed.query.startswith("bodySHA256=")
    url = f"{PUBLIC_URL}?{signed.query}"
    assert validator.validate(url, BODY.decode(), signed.headers["X-Twilio-Signature"])
    json_headers = {**signed.headers, "Content-Type": "application/json"}
    target = f"/webhooks/src?{signed.query}".encode()
    accepted(cfg, json_headers, BODY, target=target)
    assert refused(cfg, json_headers, BODY + b" ", target=target).code == "no_signature_matched"
    assert refused(cfg, json_headers, BODY, target=b"/webhooks/src").code == ("malformed_signature")


def test_twilio_sha256_shared_key_variant_matches_the_sdk() -> None:
    validator = TwilioValidator(SECRET)
    params = {"CallSid": "CA1", "From": "+1555"}
    signature = validator.compute_signature(PUBLIC_URL, params, "HMAC_SHA256")
    headers = {
        "X-Twilio-Signature": signature,
        "X-Twilio-Webhooks-Signature-Settings": "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
        "Content-Type": FORM_TYPE,
    }
    accepted(config("twilio", url=PUBLIC_URL), headers, b"CallSid=CA1&From=%2B1555")


# --- Shopify, Intercom, GitLab, Linear ------------------------------------------------------

# Shopify sends these with every webhook; its SDK's validate() refuses a request without them.
SHOPIFY_HEADERS = {
    "X-Shopify-Topic": "orders/create",
    "X-Shopify-Shop-Domain": "hookstream-test.myshopify.com",
    "X-Shopify-API-Version": "2026-01",
    "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
}
UTF8_BODY = '{"id": 820982911946154508, "note": "café ☕", "total": "10.00"}'.encode()


def test_shopify_sdk_accepts_what_hookstream_signs() -> None:
    # @shopify/shopify-api's webhooks.validate (Shopify's official Node library; none on PyPI
    # verifies webhooks): X-Shopify-Hmac-Sha256, base64 of the raw body's HMAC-SHA256.
    signed = {**sign_request(config("shopify"), UTF8_BODY).headers, **SHOPIFY_HEADERS}
    tampered = UTF8_BODY.replace(b"10.00", b"99.00")
    answers = oracles.ask(
        [
            {"oracle": "shopify", "secret": SECRET, "body": UTF8_BODY, "headers": signed},
            {"oracle": "shopify", "secret": "other-secret", "body": UTF8_BODY, "headers": signed},
            {"oracle": "shopify", "secret": SECRET, "body": tampered, "headers": signed},
        ]
    )
    assert [answer["valid"] for answer in answers] == [True, False, False]
    accepted(config("shopify"), signed, UTF8_BODY)
    assert refused(config("shopify", "other-secret"), signed, UTF8_BODY).code == (
        "no_signature_matched"
    )
    assert refused(config("shopify"), signed, tampered).code == "no_signature_matched"


def test_intercom_hub_signature_against_octokits_sha1_verifier_and_signer() -> None:
    # Intercom ships no verifier (python-intercom 5 and intercom-client 7 have none). Its signed
    # notifications (developers.intercom.com/docs/references/webhooks/webhook-models, "Signed
    # notifications") carry the PubSubHubbub header X-Hub-Signature: sha1=<40 hex>, HMAC-SHA1 of
    # the body; @octokit/webhooks-methods 3.x verifies and signs exactly that header.
    signed = sign_request(config("intercom"), UTF8_BODY).headers
    answers = oracles.ask(
        [
            {"oracle": "hub-sha1", "secret": SECRET, "body": UTF8_BODY, "headers": signed},
            {"oracle": "hub-sha1", "secret": "other-secret", "body": UTF8_BODY, "headers": signed},
            {"oracle": "hub-sha1-sign", "secret": SECRET, "body": UTF8_BODY},
        ]
    )
    assert [answer.get("valid") for answer in answers[:2]] == [True, False]
    by_octokit = {"X-Hub-Signature": answers[2]["signature"]}
    accepted(config("intercom"), by_octokit, UTF8_BODY)
    assert refused(config("intercom", "other-secret"), by_octokit, UTF8_BODY).code == (
        "no_signature_matched"
    )
    # The example header Intercom publishes on that page has this shape.
    assert re.fullmatch(r"sha1=[0-9a-f]{40}", "sha1=21ff2e149e0fdcac6f947740f6177f6434bda921")
    assert re.fullmatch(r"sha1=[0-9a-f]{40}", by_octokit["X-Hub-Signature"])
    sha256 = {"X-Hub-Signature": "sha256=" + "00" * 32}
    assert refused(config("intercom"), sha256).code == "malformed_signature"


def test_gitlab_compares_the_token_with_every_active_secret() -> None:
    # GitLab signs nothing and has no verifier to run: docs.gitlab.com/user/project/integrations/
    # webhooks ("Validate payloads by using a secret token"): GitLab sends the secret token
    # itself, unchanged, in the X-Gitlab-Token header. So the oracle is that header and value
    # as documented; a rotated pair accepts either.
    cfg = config("gitlab", f"{SECRET},old-token")
    accepted(cfg, {"X-Gitlab-Token": SECRET})
    accepted(cfg, {"X-Gitlab-Token": "old-token"})
    assert sign_request(config("gitlab"), BODY).headers == {"X-Gitlab-Token": SECRET}
    assert refused(cfg, {"X-Gitlab-Token": "other-secret"}).code == "no_signature_matched"
    assert refused(cfg, {"X-Gitlab-Token": SECRET + "x"}).code == "no_signature_matched"
    assert refused(cfg, {}).code == "missing_signature"


def linear_body(timestamp_ms: int) -> bytes:
    data = (
        b'{"action":"create","type":"Issue","data":{"title":"caf\xc3\xa9"},"webhookTimestamp":%d}'
    )
    return data % timestamp_ms


def test_linear_sdk_accepts_what_hookstream_signs_and_both_check_the_bodys_time() -> None:
    # @linear/sdk's LinearWebhookClient.verify (Linear's official SDK; none on PyPI): hex
    # HMAC-SHA256 of the body in Linear-Signature, then the body's webhookTimestamp (ms) within
    # a minute of the SDK's clock. Hence bodies stamped with the real time here.
    now = int(time.time())
    body = linear_body(now * 1000)
    signed = sign_request(config("linear"), body).headers
    stale = linear_body((now - 301) * 1000)
    stale_signed = sign_request(config("linear"), stale).headers
    untimed = b'{"action":"create","type":"Issue"}'
    untimed_signed = sign_request(config("linear"), untimed).headers
    answers = oracles.ask(
        [
            {"oracle": "linear", "secret": SECRET, "body": body, "headers": signed},
            {"oracle": "linear", "secret": "other-secret", "body": body, "headers": signed},
            {"oracle": "linear", "secret": SECRET, "body": stale, "headers": stale_signed},
            {"oracle": "linear", "secret": SECRET, "body": untimed, "headers": untimed_signed},
        ]
    )
    assert [answer["valid"] for answer in answers] == [True, False, False, False]
    assert answers[3]["detail"] == "Missing webhook timestamp"
    accepted(config("linear"), signed, body, now_s=now)
    assert refused(config("linear", "other-secret"), signed, body, now_s=now).code == (
        "no_signature_matched"
    )
    assert refused(config("linear"), stale_signed, stale, now_s=now).code == (
        "timestamp_out_of_window"
    )
    assert refused(config("linear"), untimed_signed, untimed, now_s=now).code == (
        "missing_timestamp"
    )


# --- Paddle, Square ------------------------------------------------------------------------


def test_paddle_sdk_accepts_what_hookstream_signs() -> None:
    headers = sign_request(config("paddle"), BODY, timestamp=NOW).headers
    value = headers["Paddle-Signature"]
    assert PaddleSignature().verify(value, BODY.decode(), PaddleSecret(SECRET))
    accepted(config("paddle"), headers)
    # Rotation as Paddle does it: two h1 values, the second from the current secret.
    ts, h1 = value.split(";")
    rotated = {"Paddle-Signature": f"{ts};h1={'ab' * 32};{h1}"}
    assert PaddleSignature().verify(
        rotated["Paddle-Signature"], BODY.decode(), PaddleSecret(SECRET)
    )
    accepted(config("paddle"), rotated)
    assert refused(config("paddle", "other-secret"), headers).code == "no_signature_matched"
    assert refused(config("paddle"), headers, now_s=NOW + 301).code == "timestamp_out_of_window"


def test_square_sdk_accepts_what_hookstream_signs() -> None:
    cfg = config("square", url=PUBLIC_URL)
    headers = sign_request(cfg, BODY).headers
    assert square_verify(
        request_body=BODY.decode(),
        signature_header=headers["X-Square-Hmacsha256-Signature"],
        signature_key=SECRET,
        notification_url=PUBLIC_URL,
    )
    accepted(cfg, headers)
    wrong = config("square", "other-secret", url=PUBLIC_URL)
    assert refused(wrong, headers).code == "no_signature_matched"
    other_url = config("square", url="https://other.example.com/webhooks/src")
    assert refused(other_url, headers).code == "no_signature_matched"


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["hubspot", "twilio", "square"])
def test_url_signing_schemes_need_their_public_url(scheme: str) -> None:
    with pytest.raises(ValueError, match="set url to that public URL"):
        config(scheme)
    with pytest.raises(ValueError, match="no query"):
        config(scheme, url=PUBLIC_URL + "?a=1")


def test_url_is_refused_where_nothing_signs_it() -> None:
    with pytest.raises(ValueError, match="url only applies"):
        config("slack", url=PUBLIC_URL)


def test_an_unknown_preset_is_a_config_error_listing_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(
        "sources:\n  - name: team\n    signature:\n      scheme: slak\n      secret_env: S\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"S": "x"})
    assert str(info.value).startswith(f"{path}:4: sources[0].signature.scheme: ")
    assert "unknown signature scheme 'slak'; expected one of: github, gitlab, " in str(info.value)
    assert "slack, square, standard-webhooks, stripe, twilio, zendesk" in str(info.value)
    assert "did you mean 'slack'?" in str(info.value)


def test_a_form_becomes_its_fields_and_a_broken_one_is_invalid_form() -> None:
    assert form_data(b"a=1&b=x+y&a=2&empty=") == {"a": ["1", "2"], "b": "x y", "empty": ""}
    assert form_data(b"") == {}
    for broken in (b"\xff=1", b"a=1&&b"):
        with pytest.raises(InvalidPayload) as info:
            form_data(broken)
        assert info.value.code == "invalid_form"
