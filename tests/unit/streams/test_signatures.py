"""Webhook signature verification: sign/verify, headers, timestamps, and what refusals say."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from multidict import CIMultiDict
from pydantic import SecretStr

from schemas.config import SignatureConfig
from streams.errors import SignatureError
from streams.signatures import sign_hmac_sha256, verify

SECRET = "s3cr3t-signing-key-do-not-echo"
BODY = b'{"customer_id": "c-1", "event": "ticket.created"}'
NOW = 1_700_000_000

# RFC 4231, test case 2 (HMAC-SHA256).
RFC4231_KEY = b"Jefe"
RFC4231_DATA = b"what do ya want for nothing?"
RFC4231_HEX = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def config(**overrides: Any) -> SignatureConfig:
    fields: dict[str, Any] = {
        "scheme": "hmac-sha256",
        "secret_env": "TEST_SECRET",
        "secret": SecretStr(SECRET),
    }
    fields.update(overrides)
    return SignatureConfig(**fields)


def independent_digest(body: bytes, *, timestamp: int | None = None) -> bytes:
    signed = body if timestamp is None else f"{timestamp}.".encode() + body
    return hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()


def refusal(
    cfg: SignatureConfig, headers: dict[str, str], body: bytes = BODY, now_s: float = NOW
) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        verify(cfg, headers, body, now_s=now_s)
    error = info.value
    text = f"{error} {error.detail} {error!r}"
    assert SECRET not in text
    raw_ts = headers.get("X-Timestamp", "")
    timestamp = int(raw_ts) if raw_ts.isdigit() else None
    for expected in (independent_digest(body), independent_digest(body, timestamp=timestamp)):
        for digest_form in (expected.hex(), base64.b64encode(expected).decode()):
            assert digest_form not in text
    assert error.status == 401
    return error


# --- known answer -------------------------------------------------------------------------


def test_rfc4231_case_2_known_answer() -> None:
    assert hmac.new(RFC4231_KEY, RFC4231_DATA, hashlib.sha256).hexdigest() == RFC4231_HEX
    assert sign_hmac_sha256(RFC4231_KEY, RFC4231_DATA) == RFC4231_HEX
    expected_b64 = base64.b64encode(bytes.fromhex(RFC4231_HEX)).decode()
    assert sign_hmac_sha256(RFC4231_KEY, RFC4231_DATA, encoding="base64") == expected_b64


def test_rfc4231_case_2_verifies() -> None:
    cfg = config(secret=SecretStr("Jefe"))
    verify(cfg, {"X-Signature": RFC4231_HEX}, RFC4231_DATA)
    with pytest.raises(SignatureError):
        verify(cfg, {"X-Signature": RFC4231_HEX}, RFC4231_DATA + b" ")


def test_sign_with_timestamp_signs_timestamp_dot_body() -> None:
    expected = independent_digest(BODY, timestamp=NOW)
    assert sign_hmac_sha256(SECRET.encode(), BODY, timestamp=NOW) == expected.hex()
    assert sign_hmac_sha256(SECRET.encode(), BODY) != expected.hex()


# --- round trips --------------------------------------------------------------------------


def test_hex_round_trip() -> None:
    signature = sign_hmac_sha256(SECRET.encode(), BODY)
    verify(config(), {"X-Signature": signature}, BODY)


def test_hex_is_case_insensitive_and_whitespace_tolerant() -> None:
    signature = sign_hmac_sha256(SECRET.encode(), BODY).upper()
    verify(config(), {"X-Signature": f"  {signature} "}, BODY)


def test_base64_round_trip_with_custom_header() -> None:
    cfg = config(encoding="base64", header="X-Payments-Signature")
    signature = sign_hmac_sha256(SECRET.encode(), BODY, encoding="base64")
    verify(cfg, {"X-Payments-Signature": signature}, BODY)


def test_prefix_is_stripped_before_decoding() -> None:
    cfg = config(prefix="sha256=")
    signature = sign_hmac_sha256(SECRET.encode(), BODY)
    verify(cfg, {"X-Signature": f"sha256={signature}"}, BODY)


def test_header_lookup_is_case_insensitive_with_http_headers() -> None:
    headers: CIMultiDict[str] = CIMultiDict()
    headers["x-signature"] = sign_hmac_sha256(SECRET.encode(), BODY)
    verify(config(), headers, BODY)


def test_timestamped_round_trip() -> None:
    cfg = config(timestamp_header="X-Timestamp", encoding="base64")
    signature = sign_hmac_sha256(SECRET.encode(), BODY, timestamp=NOW, encoding="base64")
    verify(cfg, {"X-Timestamp": str(NOW), "X-Signature": signature}, BODY, now_s=NOW + 1)


def test_scheme_none_accepts_anything() -> None:
    verify(SignatureConfig(scheme="none"), {}, b"anything")


# --- refusals, each with its own code -----------------------------------------------------


def test_missing_signature_header() -> None:
    error = refusal(config(), {})
    assert error.code == "missing_signature"
    assert "X-Signature" in str(error)


def test_prefix_missing_is_malformed() -> None:
    signature = sign_hmac_sha256(SECRET.encode(), BODY)
    error = refusal(config(prefix="sha256="), {"X-Signature": signature})
    assert error.code == "malformed_signature"
    assert "'sha256='" in str(error)


@pytest.mark.parametrize("value", ["not-hex-at-all", "abc", "zz" * 32])
def test_non_hex_signature_is_malformed(value: str) -> None:
    error = refusal(config(), {"X-Signature": value})
    assert error.code == "malformed_signature"
    assert "is not hex" in str(error)


@pytest.mark.parametrize("value", ["***", "abc", "YWJj ZA=="])
def test_non_base64_signature_is_malformed(value: str) -> None:
    error = refusal(config(encoding="base64"), {"X-Signature": value})
    assert error.code == "malformed_signature"
    assert "is not base64" in str(error)


def test_wrong_secret_does_not_match() -> None:
    signature = sign_hmac_sha256(b"another-secret", BODY)
    error = refusal(config(), {"X-Signature": signature})
    assert error.code == "no_signature_matched"
    assert "does not match" in str(error)


def test_tampered_body_does_not_match() -> None:
    signature = sign_hmac_sha256(SECRET.encode(), BODY)
    tampered = BODY.replace(b"c-1", b"c-2")
    error = refusal(config(), {"X-Signature": signature}, tampered)
    assert error.code == "no_signature_matched"


def test_truncated_signature_does_not_match() -> None:
    signature = sign_hmac_sha256(SECRET.encode(), BODY)[:32]
    error = refusal(config(), {"X-Signature": signature})
    assert error.code == "no_signature_matched"


def test_body_signature_is_not_accepted_when_a_timestamp_is_required() -> None:
    cfg = config(timestamp_header="X-Timestamp")
    signature = sign_hmac_sha256(SECRET.encode(), BODY)
    error = refusal(cfg, {"X-Timestamp": str(NOW), "X-Signature": signature})
    assert error.code == "no_signature_matched"


def test_signature_for_another_timestamp_does_not_match() -> None:
    cfg = config(timestamp_header="X-Timestamp")
    signature = sign_hmac_sha256(SECRET.encode(), BODY, timestamp=NOW - 10)
    error = refusal(cfg, {"X-Timestamp": str(NOW), "X-Signature": signature})
    assert error.code == "no_signature_matched"


def test_missing_timestamp_header() -> None:
    cfg = config(timestamp_header="X-Timestamp")
    signature = sign_hmac_sha256(SECRET.encode(), BODY, timestamp=NOW)
    error = refusal(cfg, {"X-Signature": signature})
    assert error.code == "missing_timestamp"
    assert "X-Timestamp" in str(error)


@pytest.mark.parametrize("value", ["yesterday", "1.7e9", "", "0x10"])
def test_malformed_timestamp_header(value: str) -> None:
    cfg = config(timestamp_header="X-Timestamp")
    error = refusal(cfg, {"X-Timestamp": value, "X-Signature": "00"})
    assert error.code == "malformed_timestamp"
    assert "Unix seconds" in str(error)


@pytest.mark.parametrize("offset_s", [-301, 301, -86_400, 86_400])
def test_timestamp_outside_the_tolerance_is_refused(offset_s: int) -> None:
    cfg = config(timestamp_header="X-Timestamp", tolerance_s=300)
    timestamp = NOW + offset_s
    signature = sign_hmac_sha256(SECRET.encode(), BODY, timestamp=timestamp)
    error = refusal(cfg, {"X-Timestamp": str(timestamp), "X-Signature": signature})
    assert error.code == "timestamp_out_of_window"
    assert "300 s tolerance" in str(error)


@pytest.mark.parametrize("offset_s", [-300, 300, 0])
def test_timestamp_at_the_edge_of_the_tolerance_is_accepted(offset_s: int) -> None:
    cfg = config(timestamp_header="X-Timestamp", tolerance_s=300)
    timestamp = NOW + offset_s
    signature = sign_hmac_sha256(SECRET.encode(), BODY, timestamp=timestamp)
    verify(cfg, {"X-Timestamp": str(timestamp), "X-Signature": signature}, BODY, now_s=NOW)


def test_timestamp_is_checked_before_the_signature() -> None:
    # An expired but correctly signed request must be refused for its age, not accepted.
    cfg = config(timestamp_header="X-Timestamp")
    old = NOW - 3600
    signature = sign_hmac_sha256(SECRET.encode(), BODY, timestamp=old)
    error = refusal(cfg, {"X-Timestamp": str(old), "X-Signature": signature})
    assert error.code == "timestamp_out_of_window"


def test_no_secret_configured_refuses() -> None:
    cfg = SignatureConfig(scheme="hmac-sha256", secret_env="UNSET")
    error = refusal(cfg, {"X-Signature": sign_hmac_sha256(b"", BODY)})
    assert error.code == "no_secret"
