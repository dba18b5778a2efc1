"""Stripe: ``Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]``.

The signed text is ``<t>.<body>`` and each ``v1`` is the hex HMAC-SHA256 under the endpoint's
``whsec_…`` secret used as UTF-8 text (Stripe sends one ``v1`` per active secret while you
roll it). ``v0`` (test-mode legacy) and unknown keys are ignored, as Stripe's libraries do.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.config_sources import SignatureConfig
from schemas.errors import SignatureError
from streams.gateway.signatures._common import (
    any_matches,
    check_window,
    hmac_sha256,
    no_match,
    parse_timestamp,
    required_header,
    utf8_keys,
)
from streams.gateway.signatures._digests import hex_candidates, time_and_signatures

SIGNATURE_HEADER = "Stripe-Signature"


def parse_header(value: str) -> tuple[str | None, list[str]]:
    """(the ``t`` text or None, every ``v1`` value) of a Stripe-Signature header."""
    return time_and_signatures(value, ",", "t", "v1")


def verify(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now_s: float | None
) -> None:
    keys = utf8_keys(config)
    value = required_header(headers, SIGNATURE_HEADER, "missing_signature")
    raw_ts, v1 = parse_header(value)
    if raw_ts is None:
        raise SignatureError(
            f"header {SIGNATURE_HEADER} has no t=<timestamp>", code="malformed_signature"
        )
    timestamp = parse_timestamp(raw_ts, f"{SIGNATURE_HEADER} t=")
    check_window(timestamp, f"{SIGNATURE_HEADER} t=", config.tolerance_s, now_s)
    candidates = hex_candidates(v1, SIGNATURE_HEADER, "v1")
    if not any_matches(keys, f"{timestamp}.".encode() + body, candidates):
        raise no_match(SIGNATURE_HEADER)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac_sha256(secret.encode(), f"{timestamp}.".encode() + body).hex()


def sign(secrets: tuple[str, ...], body: bytes, *, timestamp: int) -> dict[str, str]:
    """The header Stripe would send, with one v1 per secret (as during a secret roll)."""
    parts = [f"t={timestamp}", *(f"v1={signature(s, timestamp, body)}" for s in secrets)]
    return {SIGNATURE_HEADER: ",".join(parts)}
