"""What the sender presets share beyond :mod:`._common`: SHA-1 too, both encodings, other clocks.

Presets differ in what they sign, not in how a digest is matched: every candidate against every
configured secret in constant time (:func:`matches`), the header decoded as the sender writes
it (:func:`decode`), and timestamps in the sender's own unit (seconds, milliseconds, ISO 8601).
Refusals name the header, never a secret or an expected digest.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Literal

from schemas.errors import SignatureError
from streams.gateway.signatures._common import any_matches, check_window, required_header

Algorithm = Literal["sha256", "sha1"]
Encoding = Literal["hex", "base64"]


def digest(algorithm: Algorithm, key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, algorithm)


def encode(algorithm: Algorithm, key: bytes, message: bytes, encoding: Encoding) -> str:
    """The text a sender writes into its header for ``message``."""
    raw = digest(algorithm, key, message)
    return raw.hex() if encoding == "hex" else base64.b64encode(raw).decode()


def matches(
    algorithm: Algorithm, keys: Iterable[bytes], message: bytes, candidates: list[bytes]
) -> bool:
    """True when one candidate is the HMAC of ``message`` under one key; every pair compared
    in constant time and none skipped (timing tells nothing of which secret matched)."""
    if algorithm == "sha256":
        return any_matches(keys, message, candidates)
    matched = False
    for key in keys:
        mac = digest(algorithm, key, message)
        for candidate in candidates:
            matched |= hmac.compare_digest(mac, candidate)
    return matched


def decode(value: str, encoding: Encoding, header: str) -> bytes:
    try:
        if encoding == "hex":
            return bytes.fromhex(value)
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise SignatureError(
            f"header {header} is not {encoding}", code="malformed_signature"
        ) from None


def strip_prefix(value: str, prefix: str, header: str) -> str:
    if not value.startswith(prefix):
        raise SignatureError(
            f"header {header} must start with {prefix!r}", code="malformed_signature"
        )
    return value[len(prefix) :]


def timestamp_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise SignatureError(f"missing header {name}", code="missing_timestamp")
    return value.strip()


def check_iso_window(text: str, where: str, tolerance_s: int, now_s: float | None) -> None:
    """An ISO 8601 time (Zendesk's ``2021-07-25T10:00:00Z``) within the replay window."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SignatureError(
            f"{where} must be an ISO 8601 time", code="malformed_timestamp"
        ) from None
    if moment.tzinfo is None:
        raise SignatureError(f"{where} must name its time zone", code="malformed_timestamp")
    check_window(int(moment.timestamp()), where, tolerance_s, now_s)


def check_ms_window(text: str, where: str, tolerance_s: int, now_s: float | None) -> None:
    """Unix milliseconds (HubSpot's header, Linear's body field) within the replay window."""
    if not text.isascii() or not text.isdigit() or len(text) > 15:
        raise SignatureError(f"{where} must be Unix milliseconds", code="malformed_timestamp")
    check_window(int(text) // 1000, where, tolerance_s, now_s)


def header_digest(
    headers: Mapping[str, str], header: str, encoding: Encoding, prefix: str = ""
) -> bytes:
    """The digest a sender put in ``header`` (after its ``prefix``), decoded; refused when
    missing or not in the sender's encoding."""
    value = required_header(headers, header, "missing_signature")
    if prefix:
        value = strip_prefix(value, prefix, header)
    return decode(value, encoding, header)


def time_and_signatures(
    value: str, separator: str, time_key: str, signature_key: str
) -> tuple[str | None, list[str]]:
    """(the first ``time_key`` text or None, every ``signature_key`` value) of a header such
    as Stripe's ``t=…,v1=…`` or Paddle's ``ts=…;h1=…``; other keys are ignored."""
    timestamp: str | None = None
    signatures: list[str] = []
    for item in value.split(separator):
        key, sep, item_value = item.strip().partition("=")
        if not sep:
            continue
        if key == time_key and timestamp is None:
            timestamp = item_value
        elif key == signature_key:
            signatures.append(item_value)
    return timestamp, signatures


def hex_candidates(values: list[str], header: str, key: str) -> list[bytes]:
    """The hex values that decode; refused when none does."""
    candidates: list[bytes] = []
    for text in values:
        try:
            candidates.append(bytes.fromhex(text))
        except ValueError:
            continue
    if not candidates:
        raise SignatureError(
            f"header {header} has no {key}=<hex> signature", code="malformed_signature"
        )
    return candidates
