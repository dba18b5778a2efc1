"""Webhook signature verification, one module per scheme, chosen per source.

- ``standard-webhooks`` (:mod:`.standard`): Standard Webhooks / Svix.
- ``stripe`` (:mod:`.stripe`): ``Stripe-Signature: t=…,v1=…``.
- ``github`` (:mod:`.github`): ``X-Hub-Signature-256: sha256=…``.
- ``hmac-sha256`` (:mod:`.generic`): configurable header, hex/base64, optional timestamp.
- ``none``: unsigned, only when the source says so explicitly.

Every scheme accepts several active secrets (rotation: any one matching is enough), compares in
constant time, and refuses with a :class:`~schemas.errors.SignatureError` whose ``code`` says
which check failed and whose detail names the header, never a secret or an expected value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from schemas.config_sources import SignatureConfig
from streams.gateway.signatures import generic, github, standard, stripe
from streams.gateway.signatures.generic import sign_hmac_sha256

__all__ = ["delivery_id_source", "sign_headers", "sign_hmac_sha256", "verify"]

Verifier = Callable[[SignatureConfig, Mapping[str, str], bytes, "float | None"], None]
_VERIFIERS: dict[str, Verifier] = {
    "standard-webhooks": standard.verify,
    "stripe": stripe.verify,
    "github": github.verify,
    "hmac-sha256": generic.verify,
}

# Where each scheme's sender puts its delivery id: the same on every retry of a delivery, which
# is what the worker's dedupe keys on. (header names, payload field)
_DELIVERY_IDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "standard-webhooks": ((standard.ID_HEADER, "svix-id"), None),
    "github": ((github.DELIVERY_HEADER,), None),
    "stripe": ((), "id"),
}
_TYPE_HEADERS = {"github": github.EVENT_HEADER}
_TYPE_FIELDS = {"stripe": "type", "standard-webhooks": "type"}


def verify(
    config: SignatureConfig,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_s: float | None = None,
) -> None:
    """Raise :class:`SignatureError` unless ``body`` carries a valid signature."""
    if config.scheme == "none":
        return
    _VERIFIERS[config.scheme](config, headers, body, now_s)


def delivery_id_source(scheme: str) -> tuple[tuple[str, ...], str | None]:
    """(headers, payload field) holding the sender's delivery id under ``scheme``."""
    return _DELIVERY_IDS.get(scheme, ((), None))


def type_source(scheme: str) -> tuple[str | None, str | None]:
    """(header, payload field) naming the event type under ``scheme``, if the scheme fixes one."""
    return _TYPE_HEADERS.get(scheme), _TYPE_FIELDS.get(scheme)


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
    """
    keys = config.secrets if secrets is None else secrets
    if config.scheme == "none" or not keys:
        return {}
    ts = int(time.time()) if timestamp is None else timestamp
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
