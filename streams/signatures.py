"""Webhook signature verification, one function per scheme.

Every comparison is constant-time (``hmac.compare_digest``). Refusals say which check failed
— missing header, malformed header, timestamp outside the window, no signature matched — and
never echo a secret or the expected digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from schemas.config import SignatureConfig
from streams.errors import SignatureError


def sign_hmac_sha256(
    secret: bytes, body: bytes, *, timestamp: int | None = None, encoding: str = "hex"
) -> str:
    """The digest a sender computes; used by the demo, the tests and ``hookstream sign``."""
    signed = body if timestamp is None else f"{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


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
    if config.secret is None:  # the loader refuses to start without it; belt and braces
        raise SignatureError("the source has no signing secret configured", code="no_secret")
    secret = config.secret.get_secret_value().encode()
    timestamp: int | None = None
    if config.timestamp_header:
        raw_ts = headers.get(config.timestamp_header)
        if raw_ts is None:
            raise SignatureError(
                f"missing header {config.timestamp_header}", code="missing_timestamp"
            )
        try:
            timestamp = int(raw_ts.strip())
        except ValueError:
            raise SignatureError(
                f"header {config.timestamp_header} must be Unix seconds", code="malformed_timestamp"
            ) from None
        now = time.time() if now_s is None else now_s
        if abs(now - timestamp) > config.tolerance_s:
            raise SignatureError(
                f"timestamp in {config.timestamp_header} is outside the "
                f"{config.tolerance_s} s tolerance",
                code="timestamp_out_of_window",
            )
    raw_signature = headers.get(config.header)
    if raw_signature is None:
        raise SignatureError(f"missing header {config.header}", code="missing_signature")
    value = raw_signature.strip()
    if config.prefix:
        if not value.startswith(config.prefix):
            raise SignatureError(
                f"header {config.header} must start with {config.prefix!r}",
                code="malformed_signature",
            )
        value = value[len(config.prefix) :]
    try:
        given = (
            bytes.fromhex(value)
            if config.encoding == "hex"
            else base64.b64decode(value, validate=True)
        )
    except (ValueError, binascii.Error):
        raise SignatureError(
            f"header {config.header} is not {config.encoding}", code="malformed_signature"
        ) from None
    signed = body if timestamp is None else f"{timestamp}.".encode() + body
    expected = hmac.new(secret, signed, hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise SignatureError(
            f"the signature in {config.header} does not match the body", code="no_signature_matched"
        )
