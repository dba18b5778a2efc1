"""Hypothesis on everything that parses what a stranger sends: no input makes a parser crash.

Each verifier either accepts or raises SignatureError (a 401 with a code); the header and
address parsers return a value or None. Any other exception would be a 500 at the gateway.
"""

from __future__ import annotations

from ipaddress import ip_network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from schemas.config_sources import SignatureConfig
from schemas.errors import SignatureError
from streams.gateway.client_access import client_address, parse_address
from streams.gateway.signatures import sign_headers, stripe, verify

SECRET = "whsec_" + "QUJD" * 8
CONFIGS = [
    SignatureConfig(scheme="standard-webhooks", secret_env="S", secret=SecretStr(SECRET)),
    SignatureConfig(scheme="stripe", secret_env="S", secret=SecretStr(SECRET)),
    SignatureConfig(scheme="github", secret_env="S", secret=SecretStr("g, h")),
    SignatureConfig(
        scheme="hmac-sha256",
        secret_env="S",
        secret=SecretStr("k"),
        encoding="base64",
        prefix="sha256=",
        timestamp_header="X-Timestamp",
    ),
    SignatureConfig(scheme="hmac-sha256", secret_env="S", secret=SecretStr("k")),
]
HEADER_NAMES = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-signature",
    "Stripe-Signature",
    "X-Hub-Signature-256",
    "X-Signature",
    "X-Timestamp",
]
header_values = st.one_of(
    st.text(max_size=200),
    st.from_regex(r"\A(t=-?[0-9]{0,12},)?(v[01]=[0-9a-fA-F]{0,70},?){0,3}\Z"),
    st.from_regex(r"\A(v1[a]?,[A-Za-z0-9+/=]{0,50} ?){0,3}\Z"),
    st.from_regex(r"\Asha256=[0-9a-f]{0,66}\Z"),
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    config_index=st.integers(0, len(CONFIGS) - 1),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=6),
    body=st.binary(max_size=300),
    now_s=st.floats(0, 4e9, allow_nan=False),
)
def test_verifiers_only_accept_or_refuse(
    config_index: int, headers: dict[str, str], body: bytes, now_s: float
) -> None:
    refusal: SignatureError | None = None
    try:
        verify(CONFIGS[config_index], headers, body, now_s=now_s)
    except SignatureError as exc:
        refusal = exc
    if refusal is not None:
        assert refusal.status == 401
        assert refusal.code
        assert SECRET not in refusal.detail


@SETTINGS
@given(
    config_index=st.integers(0, len(CONFIGS) - 1),
    body=st.binary(max_size=300),
    timestamp=st.integers(0, 4_000_000_000),
)
def test_what_a_sender_signs_verifies(config_index: int, body: bytes, timestamp: int) -> None:
    config = CONFIGS[config_index]
    headers = sign_headers(config, body, webhook_id="msg_x", timestamp=timestamp)
    verify(config, headers, body, now_s=timestamp)


@SETTINGS
@given(st.text(max_size=300))
def test_stripe_header_parser_never_raises(value: str) -> None:
    timestamp, v1 = stripe.parse_header(value)
    assert timestamp is None or isinstance(timestamp, str)
    assert all(isinstance(v, str) for v in v1)


@SETTINGS
@given(
    peer=st.one_of(st.none(), st.text(max_size=60), st.ip_addresses().map(str)),
    chain=st.one_of(st.none(), st.text(max_size=120)),
)
def test_address_parsers_never_raise(peer: str | None, chain: str | None) -> None:
    parse_address(peer)
    headers = {} if chain is None else {"X-Forwarded-For": chain}
    client_address(
        peer,
        headers,
        client_ip_header="X-Forwarded-For",
        trusted_proxies=(ip_network("0.0.0.0/0"), ip_network("::/0")),
    )
