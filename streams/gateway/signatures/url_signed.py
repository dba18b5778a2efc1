"""Sender presets that sign the URL they post to: HubSpot (v3), Twilio, Square.

The gateway cannot see that URL behind a proxy, a load balancer or a tunnel, so the source
names it (``signature.url``, the public address typed into the sender's settings) and the
request's own query string is appended as received. The tests hold each to the sender's
official SDK (hubspot-api-client, twilio, squareup) and Twilio's published example.

- ``hubspot``: ``X-HubSpot-Signature-v3`` = base64 HMAC-SHA256 of
  ``POST<url><body><X-HubSpot-Request-Timestamp>`` (the timestamp in milliseconds; HubSpot
  decodes ``%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`` in the URL before signing).
- ``twilio``: ``X-Twilio-Signature`` = base64 HMAC-SHA1 (HMAC-SHA256 when
  ``X-Twilio-Webhooks-Signature-Settings`` says ``algorithm=HMAC_SHA256``) of the URL followed
  by each form field's name and value, sorted by name. A JSON body is not in the signature:
  Twilio adds ``bodySHA256=<hex SHA-256 of the body>`` to the URL's query instead, and that
  hash must match. As Twilio's own validator does, the URL is tried with and without the
  default port. No timestamp: ``I-Twilio-Idempotency-Token`` makes retries deduplicate.
- ``square``: ``X-Square-Hmacsha256-Signature`` = base64 HMAC-SHA256 of ``<url><body>``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs, urlsplit, urlunsplit

from schemas.config_sources import SignatureConfig
from schemas.errors import SignatureError
from streams.gateway.signatures._common import no_match, utf8_keys
from streams.gateway.signatures._digests import (
    Algorithm,
    check_ms_window,
    encode,
    header_digest,
    matches,
    timestamp_header,
)
from streams.gateway.signatures.forms import form_fields, is_form

HUBSPOT_SIGNATURE = "X-HubSpot-Signature-v3"
HUBSPOT_TIMESTAMP = "X-HubSpot-Request-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"
TWILIO_SETTINGS = "X-Twilio-Webhooks-Signature-Settings"
TWILIO_DELIVERY = "I-Twilio-Idempotency-Token"
TWILIO_BODY_HASH = "bodySHA256"
SQUARE_SIGNATURE = "X-Square-Hmacsha256-Signature"
_HUBSPOT_DECODED = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip

UrlVerifier = Callable[[SignatureConfig, Mapping[str, str], bytes, "float | None", str], None]


def query_of(target: bytes) -> str:
    """The raw query string of a request target (``/webhooks/x?a=1`` → ``a=1``)."""
    return target.partition(b"?")[2].partition(b"#")[0].decode("utf-8", "replace")


def signed_url(url: str, query: str) -> str:
    """The URL the sender signed: the configured public URL and the query as received."""
    return f"{url}?{query}" if query else url


def _hubspot_uri(url: str) -> str:
    for encoded, plain in _HUBSPOT_DECODED.items():
        url = url.replace(encoded, plain).replace(encoded.lower(), plain)
    return url


def _hubspot_message(url: str, body: bytes, raw_ts: str) -> bytes:
    return b"POST" + _hubspot_uri(url).encode() + body + raw_ts.encode()


def verify_hubspot(
    config: SignatureConfig,
    headers: Mapping[str, str],
    body: bytes,
    now_s: float | None,
    query: str,
) -> None:
    keys = utf8_keys(config)
    raw_ts = timestamp_header(headers, HUBSPOT_TIMESTAMP)
    check_ms_window(raw_ts, f"header {HUBSPOT_TIMESTAMP}", config.tolerance_s, now_s)
    given = header_digest(headers, HUBSPOT_SIGNATURE, "base64")
    message = _hubspot_message(signed_url(config.url or "", query), body, raw_ts)
    if not matches("sha256", keys, message, [given]):
        raise no_match(HUBSPOT_SIGNATURE)


def sign_hubspot(url: str, secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    raw_ts = str(timestamp * 1000)
    message = _hubspot_message(url, body, raw_ts)
    return {
        HUBSPOT_TIMESTAMP: raw_ts,
        HUBSPOT_SIGNATURE: encode("sha256", secret.encode(), message, "base64"),
    }


def verify_square(
    config: SignatureConfig,
    headers: Mapping[str, str],
    body: bytes,
    now_s: float | None,
    query: str,
) -> None:
    keys = utf8_keys(config)
    given = header_digest(headers, SQUARE_SIGNATURE, "base64")
    if not matches("sha256", keys, signed_url(config.url or "", query).encode() + body, [given]):
        raise no_match(SQUARE_SIGNATURE)


def sign_square(url: str, secret: str, body: bytes) -> dict[str, str]:
    return {SQUARE_SIGNATURE: encode("sha256", secret.encode(), url.encode() + body, "base64")}


def twilio_algorithm(headers: Mapping[str, str]) -> Algorithm:
    """HMAC-SHA1 (the Auth Token scheme) unless the settings header names HMAC_SHA256."""
    for part in headers.get(TWILIO_SETTINGS, "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm":
            algorithm = value.strip().upper()
            if algorithm == "HMAC_SHA256":
                return "sha256"
            if algorithm != "HMAC_SHA1":
                raise SignatureError(
                    f"header {TWILIO_SETTINGS} names an algorithm the gateway does not know",
                    code="malformed_signature",
                )
    return "sha1"


def _with_and_without_port(url: str) -> tuple[str, ...]:
    """Twilio signs some requests with the default port in the URL and some without."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    port = parts.port or default
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    bare = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    ported = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}"))
    if parts.port is not None and parts.port != default:
        return (url,)
    return (bare, ported)


def twilio_message(url: str, fields: list[tuple[str, str]]) -> bytes:
    """The URL then each field's name and value, by name (and value, as Twilio's validator)."""
    text = url
    values: dict[str, set[str]] = {}
    for name, value in fields:
        values.setdefault(name, set()).add(value)
    for name in sorted(values):
        for value in sorted(values[name]):
            text += name + value
    return text.encode()


def verify_twilio(
    config: SignatureConfig,
    headers: Mapping[str, str],
    body: bytes,
    now_s: float | None,
    query: str,
) -> None:
    keys = utf8_keys(config)
    given = header_digest(headers, TWILIO_SIGNATURE, "base64")
    algorithm = twilio_algorithm(headers)
    url = signed_url(config.url or "", query)
    fields: list[tuple[str, str]] = []
    if is_form(headers.get("Content-Type")):
        fields = form_fields(body)
    else:
        hashes = parse_qs(query).get(TWILIO_BODY_HASH)
        if not hashes:
            raise SignatureError(
                f"a Twilio request whose body is not a form must carry {TWILIO_BODY_HASH} in "
                "its query string",
                code="malformed_signature",
            )
        actual = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(actual.encode(), hashes[0].strip().lower().encode()):
            raise SignatureError(
                f"the body's SHA-256 differs from the query's {TWILIO_BODY_HASH}",
                code="no_signature_matched",
            )
    matched = False
    for candidate_url in _with_and_without_port(url):
        matched |= matches(algorithm, keys, twilio_message(candidate_url, fields), [given])
    if not matched:
        raise no_match(TWILIO_SIGNATURE)


def sign_twilio(url: str, secret: str, body: bytes, *, form: bool) -> tuple[dict[str, str], str]:
    """(the headers, the query to post to) of a Twilio request: a form is signed field by
    field; any other body goes by its hash in the query."""
    query = ""
    fields: list[tuple[str, str]] = []
    if form:
        fields = form_fields(body)
    else:
        query = f"{TWILIO_BODY_HASH}={hashlib.sha256(body).hexdigest()}"
    message = twilio_message(signed_url(url, query), fields)
    return {TWILIO_SIGNATURE: encode("sha1", secret.encode(), message, "base64")}, query


VERIFIERS: dict[str, UrlVerifier] = {
    "hubspot": verify_hubspot,
    "twilio": verify_twilio,
    "square": verify_square,
}
