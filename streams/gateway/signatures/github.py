"""GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.

GitHub signs no timestamp, so there is no replay window; the delivery id
(``X-GitHub-Delivery``) lets the worker's dedupe drop a replayed delivery. The legacy SHA-1
``X-Hub-Signature`` is not accepted.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.config_sources import SignatureConfig
from schemas.errors import SignatureError
from streams.gateway.signatures._common import (
    any_matches,
    hmac_sha256,
    no_match,
    required_header,
    utf8_keys,
)

SIGNATURE_HEADER = "X-Hub-Signature-256"
DELIVERY_HEADER = "X-GitHub-Delivery"
EVENT_HEADER = "X-GitHub-Event"
_PREFIX = "sha256="


def verify(
    config: SignatureConfig, headers: Mapping[str, str], body: bytes, now_s: float | None
) -> None:
    keys = utf8_keys(config)
    value = required_header(headers, SIGNATURE_HEADER, "missing_signature")
    if not value.startswith(_PREFIX):
        raise SignatureError(
            f"header {SIGNATURE_HEADER} must start with {_PREFIX!r}", code="malformed_signature"
        )
    try:
        given = bytes.fromhex(value[len(_PREFIX) :])
    except ValueError:
        raise SignatureError(
            f"header {SIGNATURE_HEADER} is not hex", code="malformed_signature"
        ) from None
    if not any_matches(keys, body, [given]):
        raise no_match(SIGNATURE_HEADER)


def sign(secret: str, body: bytes) -> dict[str, str]:
    return {SIGNATURE_HEADER: _PREFIX + hmac_sha256(secret.encode(), body).hex()}
