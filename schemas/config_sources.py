"""The ``sources`` block: who may post webhooks, how they sign them, how fast they may post.

Its own module because it is the gateway's half of the config: the gateway and its signature
schemes read these models and nothing of the AI, the flows or the sinks, and the signature
rules (which fields each scheme fixes, how secrets rotate) are enough to read on their own.
"""

from __future__ import annotations

import base64
import re
from typing import Annotated, Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, model_validator

from schemas.config_base import ConfigModel, Name

SignatureScheme = Literal["standard-webhooks", "stripe", "github", "hmac-sha256", "none"]
# Fields only the generic scheme reads; the named schemes fix their headers and encodings.
_GENERIC_ONLY_FIELDS = ("header", "encoding", "prefix", "timestamp_header")
# Commas or line breaks, not spaces: GitHub and generic senders let people type secrets with
# spaces in them (GitHub's own example is "It's a Secret to Everybody").
_SECRET_SEPARATORS = re.compile(r"[,\r\n]")


class SignatureConfig(ConfigModel):
    """How a source signs its webhooks.

    ``standard-webhooks`` (Svix and the Standard Webhooks spec), ``stripe``, ``github`` fix their
    headers; ``hmac-sha256`` is the generic HMAC of ``[timestamp.]body`` with a configurable
    header and encoding; ``none`` accepts unsigned webhooks and must be written explicitly.
    """

    scheme: SignatureScheme
    secret_env: str | None = Field(
        default=None,
        description="Environment variable holding the signing secret; several secrets "
        "separated by commas or line breaks are all accepted (rotation).",
    )
    header: str = "X-Signature"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field(default="", description="Text before the digest, e.g. 'sha256='.")
    timestamp_header: str | None = Field(
        default=None, description="When set, the signed text is '<timestamp>.<body>'."
    )
    tolerance_s: Annotated[int, Field(ge=1, le=86400)] = 300
    secret: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _secret_needed(self) -> SignatureConfig:
        if self.scheme != "none" and not self.secret_env:
            raise ValueError("secret_env is required unless scheme is 'none'")
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
                        f"the secret in {self.secret_env} must be 'whsec_' followed by base64"
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

    requests_per_s: Annotated[float, Field(gt=0, le=1_000_000)]
    burst: Annotated[int, Field(ge=1, le=1_000_000)] = 1


class SourceConfig(ConfigModel):
    name: Name
    signature: SignatureConfig
    id_header: str | None = Field(
        default=None,
        description="Header carrying the webhook id (default: the scheme's delivery id).",
    )
    id_field: str | None = Field(default=None, description="Payload path of the webhook id.")
    type_header: str | None = None
    type_field: str | None = Field(default=None, description="Payload path of the event type.")
    default_type: str = "webhook"
    partition_key: str | None = Field(
        default=None, description="Payload path of the Kafka key (e.g. customer_id)."
    )
    rate_limit: RateLimitConfig | None = None
    allow_ips: tuple[IPvAnyNetwork, ...] = Field(
        default=(), description="When set, only these client networks (CIDR) may post."
    )
