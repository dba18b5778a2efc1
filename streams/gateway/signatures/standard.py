"""Standard Webhooks (standardwebhooks.com; Svix's scheme, used by Clerk, Resend, Replicate…).

Headers ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (Svix sends the same
values as ``svix-id``/``svix-timestamp``/``svix-signature``; both are read). The signed text is
``<id>.<timestamp>.<body>``; the signature header holds space-separated ``v1,<base64>`` entries
(several during the sender's own key rotation), any of which may match. Secrets are written
``whsec_<base64 key>``: the HMAC key is the decoded bytes, not the text.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from functools import lru_cache

from schemas.config_sources import SignatureConfig, split_secrets
from schemas.errors import SignatureError
from streams.gateway.signatures._common import (
    any_matches,
    check_window,
    hmac_sha256,
    no_match,
    parse_timestamp,
)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
_SVIX = {
    ID_HEADER: "svix-id",
    TIMESTAMP_HEADER: "svix-timestamp",
    SIGNATURE_HEADER: "svix-signature",
}
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format marker, not a secret


@lru_cache(maxsize=256)
def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (the prefix is optional, as in the reference libs).

    Raises ValueError (never echoing the secret) when the rest is not base64.
    """
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("a standard-webhooks secret must be 'whsec_' + base64") from None


@lru_cache(maxsize=256)
def _decoded(secret_text: str) -> tuple[bytes, ...]:
    """Every key of a (possibly rotated: several) secret variable's value, decoded once."""
    return tuple(decode_secret(s) for s in split_secrets(secret_text))


def _keys(config: SignatureConfig) -> tuple[bytes, ...]:
    if config.secret is None:
        raise SignatureError("the source has no signing secret configured", code="no_secret")
    try:
        keys = _decoded(config.secret.get_secret_value())
    except ValueError:
        raise SignatureError(
            "the source's signing secret is not a valid whsec_ secret", code="no_secret"
        ) from None
    if not keys:
        raise SignatureError("the source has no signing secret configured", code="no_secret")
    return keys


def _header(headers: Mapping[str, str], name: str) -> tuple[str, str | None]:
    """(the header name the sender used, its value) — webhook-* first, then svix-*."""
    value = headers.get(name)
    if value is None:
        alias = _SVIX[name]
        if alias in headers:
            return alias, headers[alias]
    return name, value


def _candidates(value: str, header: str) -> list[bytes]:
    candidates: list[bytes] = []
    for entry in value.split():
        version, sep, signature = entry.partition(",")
        if not sep or version != "v1":
            continue  # other versions (v1a: asymmetric) are not ours to check
        try:
            # = base64.b64decode(validate=True) without its Python wrapper (once per webhook)
            candidates.append(binascii.a2b_base64(signature, strict_mode=True))
        except (ValueError, binascii.Error):
            continue
    if not candidates:
        raise SignatureError(
            f"header {header} has no 'v1,<base64>' entry", code="malformed_signature"
        )
    return candidates


def verify(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now_s: float | None
) -> None:
    keys = _keys(config)
    # webhook-* as named, else svix-* (_header): the common case without a call per header.
    id_name, msg_id = ID_HEADER, headers.get(ID_HEADER)
    if msg_id is None:
        id_name, msg_id = _header(headers, ID_HEADER)
    if not msg_id or not msg_id.strip():
        raise SignatureError(f"missing header {id_name}", code="missing_webhook_id")
    ts_name, raw_ts = TIMESTAMP_HEADER, headers.get(TIMESTAMP_HEADER)
    if raw_ts is None:
        ts_name, raw_ts = _header(headers, TIMESTAMP_HEADER)
    if raw_ts is None:
        raise SignatureError(f"missing header {ts_name}", code="missing_timestamp")
    timestamp = parse_timestamp(raw_ts, ts_name)
    check_window(timestamp, ts_name, config.tolerance_s, now_s)
    sig_name, raw_sig = SIGNATURE_HEADER, headers.get(SIGNATURE_HEADER)
    if raw_sig is None:
        sig_name, raw_sig = _header(headers, SIGNATURE_HEADER)
    if raw_sig is None or not raw_sig.strip():
        raise SignatureError(f"missing header {sig_name}", code="missing_signature")
    candidates = _candidates(raw_sig, sig_name)
    signed = f"{msg_id.strip()}.{timestamp}.".encode() + body
    if not any_matches(keys, signed, candidates):
        raise no_match(sig_name)


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` entry, as a Standard Webhooks sender computes it."""
    digest = hmac_sha256(decode_secret(secret), f"{msg_id}.{timestamp}.".encode() + body)
    return "v1," + base64.b64encode(digest).decode()


def sign(secret: str, body: bytes, *, msg_id: str, timestamp: int) -> dict[str, str]:
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, msg_id, timestamp, body),
    }
