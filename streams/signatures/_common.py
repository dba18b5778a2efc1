"""What every signature scheme shares: secrets, the replay window, constant-time matching.

Refusals name the header and the check that failed — missing, malformed, outside the window,
no match — and never a secret, an expected digest or which of several secrets came closest.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Mapping
from functools import lru_cache

from schemas.config import SignatureConfig, split_secrets
from streams.errors import SignatureError


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    # hmac.digest is the one-shot C path: a third of hmac.new(...).digest() per webhook.
    return hmac.digest(key, message, "sha256")


@lru_cache(maxsize=256)
def _utf8(secret_text: str) -> tuple[bytes, ...]:
    return tuple(s.encode() for s in split_secrets(secret_text))


def utf8_keys(config: SignatureConfig) -> tuple[bytes, ...]:
    """The configured secrets as HMAC keys (UTF-8 text, as GitHub, Stripe and most senders use)."""
    keys = () if config.secret is None else _utf8(config.secret.get_secret_value())
    if not keys:  # the loader refuses to start without one; belt and braces
        raise SignatureError("the source has no signing secret configured", code="no_secret")
    return keys


def required_header(headers: Mapping[str, str], name: str, code: str) -> str:
    value = headers.get(name)
    if value is None or not value.strip():
        raise SignatureError(f"missing header {name}", code=code)
    return value.strip()


def parse_timestamp(raw: str, header: str) -> int:
    """Unix seconds as senders write them: ASCII digits only (no sign, no float, no hex)."""
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise SignatureError(f"header {header} must be Unix seconds", code="malformed_timestamp")
    return int(text)


def check_window(timestamp: int, header: str, tolerance_s: int, now_s: float | None) -> None:
    """Refuse timestamps older or newer than the tolerance: a replayed or forged-ahead request."""
    now = time.time() if now_s is None else now_s
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(
            f"timestamp in {header} is outside the {tolerance_s} s tolerance",
            code="timestamp_out_of_window",
        )


def any_matches(keys: Iterable[bytes], message: bytes, candidates: Iterable[bytes]) -> bool:
    """True when one candidate equals the HMAC of ``message`` under one key.

    Every pair is compared with ``hmac.compare_digest`` and the loop does not stop at the first
    match, so timing tells nothing about which secret or which candidate matched.
    """
    expected = [hmac_sha256(key, message) for key in keys]
    candidate_list = list(candidates)
    matched = False
    for digest in expected:
        for candidate in candidate_list:
            matched |= hmac.compare_digest(digest, candidate)
    return matched


def no_match(header: str) -> SignatureError:
    return SignatureError(
        f"the signature in {header} does not match the body under any active secret",
        code="no_signature_matched",
    )
