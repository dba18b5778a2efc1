"""Sender presets that sign the body (and maybe a time): Slack, Zendesk, Shopify, Intercom,
GitLab, Linear, Paddle.

Each fixes its headers and what it signs, from the sender's own documentation; the tests hold
each to the sender's published example or its official SDK, Node ones included (tests/unit/
streams/gateway/test_signature_presets.py; docs/gateway.md says which, and what stands in for
the three senders that ship none: Intercom, GitLab, Zendesk). Secrets are the sender's text
used as UTF-8 bytes, as every one of these senders does, and several may be active (rotation).

========  ==================================  ===============================================
preset    headers                             signed text → digest
========  ==================================  ===============================================
slack     X-Slack-Signature: v0=<hex>,        ``v0:<ts>:<body>`` → HMAC-SHA256, hex
          X-Slack-Request-Timestamp (s)
zendesk   X-Zendesk-Webhook-Signature,        ``<ts><body>`` → HMAC-SHA256, base64
          …-Signature-Timestamp (ISO 8601)
shopify   X-Shopify-Hmac-Sha256               ``<body>`` → HMAC-SHA256, base64
intercom  X-Hub-Signature: sha1=<hex>         ``<body>`` → HMAC-SHA1, hex
gitlab    X-Gitlab-Token                      nothing: the header is the secret itself
linear    Linear-Signature (hex)              ``<body>`` → HMAC-SHA256, hex; the body's
                                              ``webhookTimestamp`` (ms) is the time
paddle    Paddle-Signature: ts=<s>;h1=<hex>   ``<ts>:<body>`` → HMAC-SHA256, hex
========  ==================================  ===============================================
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

import orjson

from schemas.config_sources import SignatureConfig
from schemas.errors import SignatureError
from streams.gateway.signatures._common import (
    check_window,
    no_match,
    parse_timestamp,
    required_header,
    utf8_keys,
)
from streams.gateway.signatures._digests import (
    check_iso_window,
    check_ms_window,
    encode,
    header_digest,
    hex_candidates,
    matches,
    time_and_signatures,
    timestamp_header,
)

SLACK_SIGNATURE = "X-Slack-Signature"
SLACK_TIMESTAMP = "X-Slack-Request-Timestamp"
ZENDESK_SIGNATURE = "X-Zendesk-Webhook-Signature"
ZENDESK_TIMESTAMP = "X-Zendesk-Webhook-Signature-Timestamp"
SHOPIFY_SIGNATURE = "X-Shopify-Hmac-Sha256"
INTERCOM_SIGNATURE = "X-Hub-Signature"
GITLAB_TOKEN = "X-Gitlab-Token"  # noqa: S105 - a header name
LINEAR_SIGNATURE = "Linear-Signature"
LINEAR_TIMESTAMP_FIELD = "webhookTimestamp"
PADDLE_SIGNATURE = "Paddle-Signature"

Verifier = Callable[[SignatureConfig, Mapping[str, str], bytes, "float | None"], None]
Signer = Callable[[str, bytes, int], dict[str, str]]


def _refuse_unless(matched: bool, header: str) -> None:
    if not matched:
        raise no_match(header)


def verify_slack(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now_s: float | None
) -> None:
    keys = utf8_keys(config)
    raw_ts = timestamp_header(headers, SLACK_TIMESTAMP)
    timestamp = parse_timestamp(raw_ts, SLACK_TIMESTAMP)
    check_window(timestamp, SLACK_TIMESTAMP, config.tolerance_s, now_s)
    given = header_digest(headers, SLACK_SIGNATURE, "hex", "v0=")
    signed = f"v0:{timestamp}:".encode() + body
    _refuse_unless(matches("sha256", keys, signed, [given]), SLACK_SIGNATURE)


def sign_slack(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    signed = f"v0:{timestamp}:".encode() + body
    return {
        SLACK_TIMESTAMP: str(timestamp),
        SLACK_SIGNATURE: "v0=" + encode("sha256", secret.encode(), signed, "hex"),
    }


def verify_zendesk(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now_s: float | None
) -> None:
    keys = utf8_keys(config)
    raw_ts = timestamp_header(headers, ZENDESK_TIMESTAMP)
    check_iso_window(raw_ts, f"header {ZENDESK_TIMESTAMP}", config.tolerance_s, now_s)
    given = header_digest(headers, ZENDESK_SIGNATURE, "base64")
    # The timestamp as sent, text for text: Zendesk signs its own rendering of the time.
    _refuse_unless(matches("sha256", keys, raw_ts.encode() + body, [given]), ZENDESK_SIGNATURE)


def zendesk_time(timestamp: int) -> str:
    """Unix seconds as Zendesk writes its signature timestamp (``2021-07-25T10:00:00Z``)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_zendesk(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    moment = zendesk_time(timestamp)
    return {
        ZENDESK_TIMESTAMP: moment,
        ZENDESK_SIGNATURE: encode("sha256", secret.encode(), moment.encode() + body, "base64"),
    }


def verify_shopify(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now_s: float | None
) -> None:
    keys = utf8_keys(config)
    given = header_digest(headers, SHOPIFY_SIGNATURE, "base64")
    _refuse_unless(matches("sha256", keys, body, [given]), SHOPIFY_SIGNATURE)


def sign_shopify(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {SHOPIFY_SIGNATURE: encode("sha256", secret.encode(), body, "base64")}


def verify_intercom(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now_s: float | None
) -> None:
    keys = utf8_keys(config)
    given = header_digest(headers, INTERCOM_SIGNATURE, "hex", "sha1=")
    _refuse_unless(matches("sha1", keys, body, [given]), INTERCOM_SIGNATURE)


def sign_intercom(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {INTERCOM_SIGNATURE: "sha1=" + encode("sha1", secret.encode(), body, "hex")}


def verify_gitlab(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now_s: float | None
) -> None:
    """GitLab sends the secret token itself: compared with every active one, in constant time."""
    keys = utf8_keys(config)
    given = required_header(headers, GITLAB_TOKEN, "missing_signature").encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(key, given)
    if not matched:
        raise SignatureError(
            f"the token in {GITLAB_TOKEN} is not an active secret of the source",
            code="no_signature_matched",
        )


def sign_gitlab(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {GITLAB_TOKEN: secret}


def _linear_timestamp(body: bytes) -> str:
    """The body's ``webhookTimestamp`` (ms) as text; Linear puts its time there, not in a
    header, so it is covered by the signature of the body."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    found = payload.get(LINEAR_TIMESTAMP_FIELD) if isinstance(payload, dict) else None
    if isinstance(found, bool) or not isinstance(found, int):
        raise SignatureError(
            f"the body has no integer field {LINEAR_TIMESTAMP_FIELD} (Unix milliseconds)",
            code="missing_timestamp",
        )
    return str(found)


def verify_linear(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now_s: float | None
) -> None:
    keys = utf8_keys(config)
    given = header_digest(headers, LINEAR_SIGNATURE, "hex")
    _refuse_unless(matches("sha256", keys, body, [given]), LINEAR_SIGNATURE)
    # After the signature: the time is inside the signed body, so a forged one fails above.
    where = f"the body's {LINEAR_TIMESTAMP_FIELD}"
    check_ms_window(_linear_timestamp(body), where, config.tolerance_s, now_s)


def sign_linear(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The header; the body must carry its own ``webhookTimestamp`` (``hookstream sign`` signs
    the file as it is)."""
    return {LINEAR_SIGNATURE: encode("sha256", secret.encode(), body, "hex")}


def verify_paddle(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now_s: float | None
) -> None:
    keys = utf8_keys(config)
    value = required_header(headers, PADDLE_SIGNATURE, "missing_signature")
    raw_ts, h1 = time_and_signatures(value, ";", "ts", "h1")
    if raw_ts is None:
        raise SignatureError(
            f"header {PADDLE_SIGNATURE} has no ts=<timestamp>", code="malformed_signature"
        )
    where = f"{PADDLE_SIGNATURE} ts="
    timestamp = parse_timestamp(raw_ts, where)
    check_window(timestamp, where, config.tolerance_s, now_s)
    candidates = hex_candidates(h1, PADDLE_SIGNATURE, "h1")
    signed = f"{timestamp}:".encode() + body
    _refuse_unless(matches("sha256", keys, signed, candidates), PADDLE_SIGNATURE)


def sign_paddle(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    signed = f"{timestamp}:".encode() + body
    return {
        PADDLE_SIGNATURE: f"ts={timestamp};h1={encode('sha256', secret.encode(), signed, 'hex')}"
    }


VERIFIERS: dict[str, Verifier] = {
    "slack": verify_slack,
    "zendesk": verify_zendesk,
    "shopify": verify_shopify,
    "intercom": verify_intercom,
    "gitlab": verify_gitlab,
    "linear": verify_linear,
    "paddle": verify_paddle,
}
SIGNERS: dict[str, Signer] = {
    "slack": sign_slack,
    "zendesk": sign_zendesk,
    "shopify": sign_shopify,
    "intercom": sign_intercom,
    "gitlab": sign_gitlab,
    "linear": sign_linear,
    "paddle": sign_paddle,
}
