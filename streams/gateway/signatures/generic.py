"""Generic HMAC-SHA256: a configurable header, hex or base64, optional prefix and timestamp.

The signed text is the raw body, or ``<timestamp>.<body>`` when ``timestamp_header`` is set.
This covers the many senders that roll their own scheme (and hookstream's own examples).
"""

from __future__ import annotations

import base64
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
from streams.gateway.signatures._digests import decode


def sign_hmac_sha256(
    secret: bytes, body: bytes, *, timestamp: int | None = None, encoding: str = "hex"
) -> str:
    """The digest a sender computes; used by the demo, the tests and ``hookstream sign``."""
    signed = body if timestamp is None else f"{timestamp}.".encode() + body
    digest = hmac_sha256(secret, signed)
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def verify(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now_s: float | None
) -> None:
    keys = utf8_keys(config)
    timestamp: int | None = None
    if config.timestamp_header:
        raw_ts = headers.get(config.timestamp_header)
        if raw_ts is None:
            raise SignatureError(
                f"missing header {config.timestamp_header}", code="missing_timestamp"
            )
        timestamp = parse_timestamp(raw_ts, config.timestamp_header)
        check_window(timestamp, config.timestamp_header, config.tolerance_s, now_s)
    value = required_header(headers, config.header, "missing_signature")
    if config.prefix:
        if not value.startswith(config.prefix):
            raise SignatureError(
                f"header {config.header} must start with {config.prefix!r}",
                code="malformed_signature",
            )
        value = value[len(config.prefix) :]
    given = decode(value, config.encoding, config.header)
    signed = body if timestamp is None else f"{timestamp}.".encode() + body
    if not any_matches(keys, signed, [given]):
        raise no_match(config.header)


def sign(config: SignatureConfig, secret: str, body: bytes, *, timestamp: int) -> dict[str, str]:
    ts = timestamp if config.timestamp_header else None
    digest = sign_hmac_sha256(secret.encode(), body, timestamp=ts, encoding=config.encoding)
    headers = {config.header: f"{config.prefix}{digest}"}
    if config.timestamp_header:
        headers[config.timestamp_header] = str(timestamp)
    return headers
