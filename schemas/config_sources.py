"""The ``sources`` block: who may post webhooks, how they sign them, how fast they may post.

Its own module because it is the gateway's half of the config: the gateway and its signature
schemes read these models and nothing of the AI, the flows or the sinks, and the signature
rules (which fields each scheme fixes, how secrets rotate) are enough to read on their own.
"""

from __future__ import annotations

import base64
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, IPvAnyNetwork, SecretStr, model_validator

from schemas.config_base import ConfigModel, Name, secret_origin

SignatureScheme = Literal[
    "standard-webhooks",
    "stripe",
    "github",
    "hmac-sha256",
    # Presets for the senders people have (streams/gateway/signatures/presets.py, url_signed.py)
    "slack",
    "zendesk",
    "hubspot",
    "twilio",
    "shopify",
    "intercom",
    "gitlab",
    "linear",
    "paddle",
    "square",
    "none",
]
# Fields only the generic scheme reads; the named schemes fix their headers and encodings.
_GENERIC_ONLY_FIELDS = ("header", "encoding", "prefix", "timestamp_header")
# Senders that sign the URL they post to: the gateway cannot know it behind a proxy or a tunnel.
URL_SIGNED_SCHEMES = frozenset({"hubspot", "twilio", "square"})
# Commas or line breaks, not spaces: GitHub and generic senders let people type secrets with
# spaces in them (GitHub's own example is "It's a Secret to Everybody").
_SECRET_SEPARATORS = re.compile(r"[,\r\n]")


class SignatureConfig(ConfigModel):
    """How a source signs its webhooks.

    ``standard-webhooks`` (Svix and the Standard Webhooks spec), ``stripe``, ``github`` and the
    sender presets (``slack`` … ``square``) fix their headers; ``hmac-sha256`` is the generic
    HMAC of ``[timestamp.]body`` with a configurable header and encoding; ``none`` accepts
    unsigned webhooks and must be written explicitly.
    """

    scheme: SignatureScheme = Field(
        description="How the sender signs: standard-webhooks (Svix), stripe, github, the "
        "sender presets slack, zendesk, hubspot (v3), twilio, shopify, intercom, gitlab, "
        "linear, paddle and square (docs/gateway.md has what each signs), hmac-sha256 (the "
        "generic HMAC, shaped by the fields below) or none (unsigned webhooks accepted; it "
        "must be written explicitly).",
    )
    secret_env: str | None = Field(
        default=None,
        description="The environment variable holding the signing secret; required unless "
        "scheme is none. Several secrets separated by commas or line breaks are all "
        "accepted (rotation: the new one first).",
    )
    secret_file: str | None = Field(
        default=None,
        description="Instead of secret_env: a file holding the signing secret (a mounted "
        "Kubernetes or Docker secret), relative to the config file's folder unless absolute; "
        "one trailing line break is ignored. Several secrets as in secret_env.",
    )
    header: str = Field(
        default="X-Signature",
        description="hmac-sha256 only: the request header holding the digest (the other "
        "schemes fix their headers). Missing: 401 missing_signature.",
    )
    encoding: Literal["hex", "base64"] = Field(
        default="hex", description="hmac-sha256 only: how the digest is written."
    )
    prefix: str = Field(
        default="",
        description="hmac-sha256 only: text before the digest in the header, e.g. "
        "'sha256='; empty: none.",
    )
    timestamp_header: str | None = Field(
        default=None,
        description="hmac-sha256 only: a header holding Unix seconds. When set, the signed "
        "text is '<timestamp>.<body>' and the timestamp must be within tolerance_s.",
    )
    tolerance_s: Annotated[int, Field(ge=1, le=86400)] = Field(
        default=300,
        description="How far a signed timestamp may be from the gateway's clock, either way, "
        "in seconds (the replay window); beyond it: 401 timestamp_out_of_window. Used by "
        "standard-webhooks, stripe, slack, zendesk, hubspot, linear, paddle, and hmac-sha256 "
        "with timestamp_header; github, twilio, shopify, intercom, gitlab and square sign no "
        "time.",
    )
    url: str | None = Field(
        default=None,
        description="hubspot, twilio and square only (required there): the public URL the "
        "sender posts to, as typed into the sender's settings, without query string (e.g. "
        "https://hooks.example.com/webhooks/twilio). These senders sign the URL, which the "
        "gateway cannot see behind a proxy or tunnel; the request's own query string is "
        "appended as received.",
    )
    secret: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _url_where_signed(self) -> SignatureConfig:
        if self.scheme in URL_SIGNED_SCHEMES:
            if not self.url:
                raise ValueError(
                    f"scheme {self.scheme} signs the URL it posts to: set url to that public "
                    "URL (e.g. https://hooks.example.com/webhooks/<source>)"
                )
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"url {self.url!r} must be an absolute http:// or https:// URL")
            if parts.query or parts.fragment:
                raise ValueError(
                    f"url {self.url!r} must have no query or fragment: the request's own "
                    "query string is appended as received"
                )
        elif self.url is not None:
            raise ValueError("url only applies to schemes hubspot, twilio and square")
        return self

    @model_validator(mode="after")
    def _secret_needed(self) -> SignatureConfig:
        if self.secret_env and self.secret_file:
            raise ValueError("set secret_env or secret_file, not both")
        if self.scheme != "none" and not (self.secret_env or self.secret_file):
            raise ValueError("secret_env or secret_file is required unless scheme is 'none'")
        if self.scheme not in ("hmac-sha256", "none"):
            fixed = [f for f in _GENERIC_ONLY_FIELDS if f in self.model_fields_set]
            if fixed:
                raise ValueError(
                    f"{fixed} only apply to scheme hmac-sha256; {self.scheme} fixes its headers"
                )
        if self.scheme == "standard-webhooks":
            for secret in self.secrets:
                try:
                    base64.b64decode(secret.removeprefix("whsec_"), validate=True)
                except ValueError:
                    # Never echo the value: say which variable holds it.
                    raise ValueError(
                        f"the secret in {secret_origin(self, 'secret')} must be 'whsec_' "
                        "followed by base64"
                    ) from None
        return self

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every active secret: the variable may hold several, separated by commas or line
        breaks (surrounding blanks are trimmed)."""
        return () if self.secret is None else split_secrets(self.secret.get_secret_value())


def split_secrets(text: str) -> tuple[str, ...]:
    """The secrets of one variable's value (rotation: several, comma- or line-separated)."""
    return tuple(s for s in (part.strip() for part in _SECRET_SEPARATORS.split(text)) if s)


class RateLimitConfig(ConfigModel):
    """A token bucket per source (per gateway process): ``burst`` requests at once, refilled at
    ``requests_per_s``. Beyond it: 429 with Retry-After."""

    requests_per_s: Annotated[float, Field(gt=0, le=1_000_000)] = Field(
        description="The sustained rate, in requests per second per gateway process (the "
        "bucket refills continuously at this rate).",
    )
    burst: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=1,
        description="The bucket's size: how many requests may come at once after a quiet "
        "spell; 1 allows no burst beyond the rate.",
    )


class SourceConfig(ConfigModel):
    """One sender of webhooks, posting to ``POST /webhooks/{name}``."""

    name: Name = Field(
        description="The source's name: its webhooks go to POST /webhooks/{name}, and flows "
        "pick its events by it (match.source)."
    )
    signature: SignatureConfig = Field(
        description="How the gateway verifies that a webhook comes from this sender."
    )
    id_header: str | None = Field(
        default=None,
        description="The header carrying the sender's delivery id, which makes its retries "
        "deduplicate. The id is taken from this header, else id_field, else the scheme's "
        "delivery id, else the body's SHA-256.",
    )
    id_field: str | None = Field(
        default=None,
        description="The dotted payload path of the delivery id (e.g. id), used when "
        "id_header is unset or absent from the request.",
    )
    type_header: str | None = Field(
        default=None,
        description="The header carrying the event type that flows match on. The type is "
        "taken from this header, else the scheme's type header, else type_field, else "
        "default_type.",
    )
    type_field: str | None = Field(
        default=None, description="The dotted payload path of the event type (e.g. event)."
    )
    default_type: str = Field(
        default="webhook",
        description="The event type when neither a header nor the payload gives one.",
    )
    partition_key: str | None = Field(
        default=None,
        description="The dotted payload path of the Kafka key (e.g. customer_id): events with "
        "the same key keep their order. It must be a non-empty string or an integer: a "
        "webhook without it gets 400 missing_partition_key, one with another type 400 "
        "invalid_partition_key; unset, the key is the event id (no order between events).",
    )
    rate_limit: RateLimitConfig | None = Field(
        default=None,
        description="A token bucket per gateway process; beyond it: 429 rate_limited with "
        "Retry-After. Unset: no limit.",
    )
    allow_ips: tuple[IPvAnyNetwork, ...] = Field(
        default=(),
        description="When set, only clients in these networks (CIDR) may post; others get "
        "403 ip_not_allowed. Behind a proxy, see gateway.client_ip_header. Empty: anyone.",
    )
