"""Webhook signature verification, one module per scheme, chosen per source.

- ``standard-webhooks`` (:mod:`.standard`): Standard Webhooks / Svix.
- ``stripe`` (:mod:`.stripe`): ``Stripe-Signature: t=…,v1=…``.
- ``github`` (:mod:`.github`): ``X-Hub-Signature-256: sha256=…``.
- ``hmac-sha256`` (:mod:`.generic`): configurable header, hex/base64, optional timestamp.
- sender presets that sign the body (:mod:`.presets`): ``slack``, ``zendesk``, ``shopify``,
  ``intercom``, ``gitlab`` (a token, not a signature), ``linear``, ``paddle``.
- sender presets that sign the URL they post to (:mod:`.url_signed`): ``hubspot`` (v3),
  ``twilio`` (forms, and JSON by ``bodySHA256``), ``square``.
- ``none``: unsigned, only when the source says so explicitly.

Every scheme accepts several active secrets (rotation: any one matching is enough), compares in
constant time, and refuses with a :class:`~schemas.errors.SignatureError` whose ``code`` says
which check failed and whose detail names the header, never a secret or an expected value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import orjson

from schemas.config_sources import SignatureConfig
from streams.gateway.signatures import generic, github, presets, standard, stripe, url_signed
from streams.gateway.signatures.forms import FORM_SCHEMES, is_form
from streams.gateway.signatures.generic import sign_hmac_sha256

__all__ = [
    "FORM_SCHEMES",
    "SCHEME_HEADERS",
    "SignedRequest",
    "delivery_id_source",
    "sign_headers",
    "sign_hmac_sha256",
    "sign_request",
    "verify",
]

Verifier = Callable[[SignatureConfig, Mapping[str, str], bytes, "float | None"], None]
_BUILT_IN = frozenset({"standard-webhooks", "stripe", "github", "hmac-sha256"})
_VERIFIERS: dict[str, Verifier] = {
    "standard-webhooks": standard.verify,
    "stripe": stripe.verify,
    "github": github.verify,
    "hmac-sha256": generic.verify,
    **presets.VERIFIERS,
}

# Where each scheme's sender puts its delivery id: the same on every retry of a delivery, which
# is what the worker's dedupe keys on. (header names, payload field)
_DELIVERY_IDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "standard-webhooks": ((standard.ID_HEADER, "svix-id"), None),
    "github": ((github.DELIVERY_HEADER,), None),
    "stripe": ((), "id"),
    "slack": ((), "event_id"),
    "zendesk": ((), "id"),
    "twilio": ((url_signed.TWILIO_DELIVERY,), None),
    "shopify": (("X-Shopify-Webhook-Id",), None),
    "intercom": ((), "id"),
    "gitlab": (("Idempotency-Key", "X-Gitlab-Event-UUID"), None),
    "linear": (("Linear-Delivery",), None),
    "paddle": ((), "event_id"),
    "square": ((), "event_id"),
}
# The headers each scheme reads (the OpenAPI document lists them per source).
SCHEME_HEADERS: dict[str, tuple[str, ...]] = {
    "standard-webhooks": (standard.ID_HEADER, standard.TIMESTAMP_HEADER, standard.SIGNATURE_HEADER),
    "stripe": (stripe.SIGNATURE_HEADER,),
    "github": (github.SIGNATURE_HEADER, github.DELIVERY_HEADER, github.EVENT_HEADER),
    "slack": (presets.SLACK_SIGNATURE, presets.SLACK_TIMESTAMP),
    "zendesk": (presets.ZENDESK_SIGNATURE, presets.ZENDESK_TIMESTAMP),
    "hubspot": (url_signed.HUBSPOT_SIGNATURE, url_signed.HUBSPOT_TIMESTAMP),
    "twilio": (url_signed.TWILIO_SIGNATURE, url_signed.TWILIO_SETTINGS, url_signed.TWILIO_DELIVERY),
    "shopify": (presets.SHOPIFY_SIGNATURE, "X-Shopify-Webhook-Id", "X-Shopify-Topic"),
    "intercom": (presets.INTERCOM_SIGNATURE,),
    "gitlab": (presets.GITLAB_TOKEN, "Idempotency-Key", "X-Gitlab-Event-UUID", "X-Gitlab-Event"),
    "linear": (presets.LINEAR_SIGNATURE, "Linear-Delivery", "Linear-Event"),
    "paddle": (presets.PADDLE_SIGNATURE,),
    "square": (url_signed.SQUARE_SIGNATURE,),
}
_TYPE_HEADERS = {
    "github": github.EVENT_HEADER,
    "shopify": "X-Shopify-Topic",
    "gitlab": "X-Gitlab-Event",
    "linear": "Linear-Event",
}
_TYPE_FIELDS = {
    "stripe": "type",
    "standard-webhooks": "type",
    "slack": "event.type",
    "zendesk": "type",
    "intercom": "topic",
    "paddle": "event_type",
    "square": "type",
}


def verify(
    config: SignatureConfig,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_s: float | None = None,
    target: bytes = b"",
) -> None:
    """Raise :class:`SignatureError` unless ``body`` carries a valid signature.

    ``target``: the request target as received (``/webhooks/x?a=1``); the schemes that sign
    their URL (:mod:`.url_signed`) take its query string.
    """
    scheme = config.scheme
    if scheme == "none":
        return
    url_verifier = url_signed.VERIFIERS.get(scheme)
    if url_verifier is not None:
        url_verifier(config, headers, body, now_s, url_signed.query_of(target))
        return
    _VERIFIERS[scheme](config, headers, body, now_s)


def handshake(config: SignatureConfig, payload: object) -> bytes | None:
    """The answer a sender's verified handshake expects instead of an event, else None.

    Slack's Events API posts ``{"type": "url_verification", "challenge": …}`` (signed) when its
    Request URL is set, and saves the URL only if the answer echoes the challenge.
    """
    if config.scheme != "slack" or not isinstance(payload, dict):
        return None
    challenge = payload.get("challenge")
    if payload.get("type") != "url_verification" or not isinstance(challenge, str):
        return None
    return orjson.dumps({"challenge": challenge})


def takes_form(config: SignatureConfig, content_type: str | None) -> bool:
    """Whether this body is a form the source's scheme signs (its data becomes the fields)."""
    return config.scheme in FORM_SCHEMES and is_form(content_type)


def delivery_id_source(scheme: str) -> tuple[tuple[str, ...], str | None]:
    """(headers, payload field) holding the sender's delivery id under ``scheme``."""
    return _DELIVERY_IDS.get(scheme, ((), None))


def type_source(scheme: str) -> tuple[str | None, str | None]:
    """(header, payload field) naming the event type under ``scheme``, if the scheme fixes one."""
    return _TYPE_HEADERS.get(scheme), _TYPE_FIELDS.get(scheme)


class SignedRequest(NamedTuple):
    """What a sender adds to a request: headers, and a query string (Twilio's ``bodySHA256``)."""

    headers: dict[str, str]
    query: str = ""


def sign_request(
    config: SignatureConfig,
    body: bytes,
    *,
    content_type: str = "application/json",
    webhook_id: str | None = None,
    timestamp: int | None = None,
    secrets: tuple[str, ...] | None = None,
) -> SignedRequest:
    """The request a sender of this scheme would make of ``body`` (``hookstream sign``, tests).

    Signs with the first configured secret unless ``secrets`` is given (Stripe signs with each).
    """
    keys = config.secrets if secrets is None else secrets
    if config.scheme == "none" or not keys:
        return SignedRequest({})
    ts = int(time.time()) if timestamp is None else timestamp
    scheme, url = config.scheme, config.url or ""
    signer = presets.SIGNERS.get(scheme)
    if signer is not None:
        return SignedRequest(signer(keys[0], body, ts))
    if scheme == "twilio":
        headers, query = url_signed.sign_twilio(url, keys[0], body, form=is_form(content_type))
        if webhook_id:
            headers[url_signed.TWILIO_DELIVERY] = webhook_id
        return SignedRequest(headers, query)
    if scheme == "hubspot":
        return SignedRequest(url_signed.sign_hubspot(url, keys[0], body, ts))
    if scheme == "square":
        return SignedRequest(url_signed.sign_square(url, keys[0], body))
    return SignedRequest(
        sign_headers(config, body, webhook_id=webhook_id, timestamp=ts, secrets=keys)
    )


def sign_headers(
    config: SignatureConfig,
    body: bytes,
    *,
    webhook_id: str | None = None,
    timestamp: int | None = None,
    secrets: tuple[str, ...] | None = None,
) -> dict[str, str]:
    """The headers a sender of this scheme would add (``hookstream sign``, demo, tests, bench).

    Signs with the first configured secret unless ``secrets`` is given (Stripe signs with each).
    The presets' headers come from :func:`sign_request` (Twilio's JSON variant also needs its
    query string: use :func:`sign_request` for it).
    """
    keys = config.secrets if secrets is None else secrets
    if config.scheme == "none" or not keys:
        return {}
    ts = int(time.time()) if timestamp is None else timestamp
    if config.scheme not in _BUILT_IN:
        return sign_request(config, body, webhook_id=webhook_id, timestamp=ts, secrets=keys).headers
    if config.scheme == "standard-webhooks":
        msg_id = webhook_id or f"msg_{time.time_ns():x}"
        return standard.sign(keys[0], body, msg_id=msg_id, timestamp=ts)
    if config.scheme == "stripe":
        return stripe.sign(keys, body, timestamp=ts)
    if config.scheme == "github":
        headers = github.sign(keys[0], body)
        if webhook_id:
            headers[github.DELIVERY_HEADER] = webhook_id
        return headers
    return generic.sign(config, keys[0], body, timestamp=ts)
