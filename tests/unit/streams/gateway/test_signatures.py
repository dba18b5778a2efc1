"""Webhook signature verification: sign/verify, headers, timestamps, and what refusals say."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from multidict import CIMultiDict
from pydantic import SecretStr

from schemas.config_sources import SignatureConfig
from schemas.errors import SignatureError
from streams.gateway.signatures import (
    github,
    sign_headers,
    sign_hmac_sha256,
    standard,
    stripe,
    verify,
)
from streams.gateway.signatures._common import hmac_sha256

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


# --- named schemes: published vectors and a conformance matrix -----------------------------

STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # Standard Webhooks spec test vector
STANDARD_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STANDARD_TS = 1614265330
STANDARD_BODY = b'{"test": 2432232314}'
STANDARD_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

GITHUB_SECRET = "It's a Secret to Everybody"  # GitHub's documented example
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def scheme_config(scheme: str, secret: str, **overrides: Any) -> SignatureConfig:
    fields: dict[str, Any] = {"scheme": scheme, "secret_env": "S", "secret": SecretStr(secret)}
    fields.update(overrides)
    return SignatureConfig(**fields)


def test_standard_webhooks_published_test_vector() -> None:
    cfg = scheme_config("standard-webhooks", STANDARD_SECRET)
    headers = {
        "webhook-id": STANDARD_ID,
        "webhook-timestamp": str(STANDARD_TS),
        "webhook-signature": STANDARD_SIGNATURE,
    }
    verify(cfg, headers, STANDARD_BODY, now_s=STANDARD_TS)
    assert standard.signature(STANDARD_SECRET, STANDARD_ID, STANDARD_TS, STANDARD_BODY) == (
        STANDARD_SIGNATURE
    )
    # The reference libraries accept the key without its whsec_ prefix too.
    bare = scheme_config("standard-webhooks", STANDARD_SECRET.removeprefix("whsec_"))
    verify(bare, headers, STANDARD_BODY, now_s=STANDARD_TS)


def test_standard_webhooks_several_entries_and_svix_header_names() -> None:
    cfg = scheme_config("standard-webhooks", STANDARD_SECRET)
    headers = {
        "svix-id": STANDARD_ID,
        "svix-timestamp": str(STANDARD_TS),
        "svix-signature": f"v1,bm9wZQ== v1a,AAAA {STANDARD_SIGNATURE} v2,zz",
    }
    verify(cfg, headers, STANDARD_BODY, now_s=STANDARD_TS)


def test_github_documented_example() -> None:
    cfg = scheme_config("github", GITHUB_SECRET)
    verify(cfg, {"X-Hub-Signature-256": GITHUB_SIGNATURE}, GITHUB_BODY)
    assert github.sign(GITHUB_SECRET, GITHUB_BODY) == {"X-Hub-Signature-256": GITHUB_SIGNATURE}


def test_stripe_documented_scheme_computed_independently() -> None:
    # Stripe documents: v1 = hex(HMAC-SHA256(endpoint secret, "<t>.<raw body>")).
    secret = "whsec_test_secret"
    expected = hmac.new(secret.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    header = f"t={NOW},v1={expected},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb0"
    verify(scheme_config("stripe", secret), {"Stripe-Signature": header}, BODY, now_s=NOW)
    assert stripe.sign((secret,), BODY, timestamp=NOW) == {
        "Stripe-Signature": f"t={NOW},v1={expected}"
    }


def test_stripe_header_parsing_of_the_documented_example() -> None:
    example = (
        "t=1492774577,"
        "v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,"
        "v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    )
    assert stripe.parse_header(example) == (
        "1492774577",
        ["5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"],
    )


ROTATED_NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
ROTATED_OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
WRONG = "whsec_" + base64.b64encode(b"w" * 32).decode()
SCHEMES = ["standard-webhooks", "stripe", "github", "hmac-sha256"]
TIMESTAMPED = ["standard-webhooks", "stripe", "hmac-sha256"]


def matrix_config(scheme: str, secret: str = f"{ROTATED_NEW}, {ROTATED_OLD}") -> SignatureConfig:
    extra: dict[str, Any] = (
        {"timestamp_header": "X-Timestamp", "encoding": "base64"} if scheme == "hmac-sha256" else {}
    )
    return scheme_config(scheme, secret, **extra)


def signed(scheme: str, secret: str, body: bytes = BODY, timestamp: int = NOW) -> dict[str, str]:
    return sign_headers(
        matrix_config(scheme), body, webhook_id="wh-1", timestamp=timestamp, secrets=(secret,)
    )


def matrix_refusal(scheme: str, headers: dict[str, str], body: bytes = BODY) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        verify(matrix_config(scheme), headers, body, now_s=NOW)
    text = f"{info.value} {info.value.detail!r}"
    for secret in (ROTATED_NEW, ROTATED_OLD, WRONG):
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text
    return info.value


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("secret", [ROTATED_NEW, ROTATED_OLD])
def test_valid_with_either_rotated_secret(scheme: str, secret: str) -> None:
    verify(matrix_config(scheme), signed(scheme, secret), BODY, now_s=NOW)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_tampered_body_is_refused(scheme: str) -> None:
    error = matrix_refusal(scheme, signed(scheme, ROTATED_NEW), BODY + b" ")
    assert error.code == "no_signature_matched"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_wrong_secret_is_refused(scheme: str) -> None:
    error = matrix_refusal(scheme, signed(scheme, WRONG))
    assert error.code == "no_signature_matched"


@pytest.mark.parametrize("scheme", TIMESTAMPED)
@pytest.mark.parametrize("offset_s", [-301, 301])
def test_old_and_future_timestamps_are_refused(scheme: str, offset_s: int) -> None:
    error = matrix_refusal(scheme, signed(scheme, ROTATED_NEW, timestamp=NOW + offset_s))
    assert error.code == "timestamp_out_of_window"


@pytest.mark.parametrize(
    ("scheme", "header", "code"),
    [
        ("standard-webhooks", "webhook-signature", "missing_signature"),
        ("standard-webhooks", "webhook-timestamp", "missing_timestamp"),
        ("standard-webhooks", "webhook-id", "missing_webhook_id"),
        ("stripe", "Stripe-Signature", "missing_signature"),
        ("github", "X-Hub-Signature-256", "missing_signature"),
        ("hmac-sha256", "X-Signature", "missing_signature"),
        ("hmac-sha256", "X-Timestamp", "missing_timestamp"),
    ],
)
def test_missing_headers_are_named(scheme: str, header: str, code: str) -> None:
    headers = signed(scheme, ROTATED_NEW)
    del headers[header]
    error = matrix_refusal(scheme, headers)
    assert error.code == code
    assert header in error.detail


@pytest.mark.parametrize(
    ("scheme", "header", "value", "code"),
    [
        ("standard-webhooks", "webhook-signature", "v1=abc", "malformed_signature"),
        ("standard-webhooks", "webhook-signature", "v1,***", "malformed_signature"),
        ("standard-webhooks", "webhook-signature", "v2,AAAA", "malformed_signature"),
        ("standard-webhooks", "webhook-timestamp", "-5", "malformed_timestamp"),
        ("standard-webhooks", "webhook-timestamp", "1e9", "malformed_timestamp"),
        ("stripe", "Stripe-Signature", "v1=abcd", "malformed_signature"),
        ("stripe", "Stripe-Signature", f"t={NOW}", "malformed_signature"),
        ("stripe", "Stripe-Signature", f"t={NOW},v1=zz", "malformed_signature"),
        ("stripe", "Stripe-Signature", "t=soon,v1=00", "malformed_timestamp"),
        ("github", "X-Hub-Signature-256", "sha1=00", "malformed_signature"),
        ("github", "X-Hub-Signature-256", "sha256=xyz", "malformed_signature"),
        ("hmac-sha256", "X-Signature", "%%%", "malformed_signature"),
        ("hmac-sha256", "X-Timestamp", "yesterday", "malformed_timestamp"),
    ],
)
def test_malformed_headers(scheme: str, header: str, value: str, code: str) -> None:
    headers = {**signed(scheme, ROTATED_NEW), header: value}
    assert matrix_refusal(scheme, headers).code == code


def test_stripe_accepts_any_of_several_v1() -> None:
    cfg = matrix_config("stripe", secret=ROTATED_OLD)
    headers = stripe.sign((WRONG, ROTATED_OLD), BODY, timestamp=NOW)
    verify(cfg, headers, BODY, now_s=NOW)


def test_a_standard_webhooks_secret_must_be_base64() -> None:
    with pytest.raises(ValueError, match="in S must be 'whsec_' followed by base64") as info:
        scheme_config("standard-webhooks", "whsec_not base64!")
    assert "not base64!" not in str(info.value)


def test_named_schemes_refuse_generic_only_fields() -> None:
    with pytest.raises(ValueError, match="only apply to scheme hmac-sha256"):
        scheme_config("github", "s", header="X-Other")


def test_sign_headers_for_none_is_empty() -> None:
    assert sign_headers(SignatureConfig(scheme="none"), BODY) == {}


@pytest.mark.parametrize("key_bytes", [0, 1, 32, 63, 64, 65, 200])
def test_hmac_sha256_from_kept_key_states_equals_the_standard_library(key_bytes: int) -> None:
    # Keys up to SHA-256's block size are padded, longer ones hashed first (RFC 2104): both
    # paths, and the cache returning the same states for the second message.
    key = bytes(range(256))[:key_bytes]
    for message in (b"", b"msg_1.1700000000.{}", bytes(range(256)) * 5):
        assert hmac_sha256(key, message) == hmac.digest(key, message, "sha256")
