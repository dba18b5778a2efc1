"""A gateway config with one source per signature scheme and per guard, for the gateway tests.

Not a test module: the production, fuzz and durability tests share it. Secrets live in the
returned environment, as in production (the file names the variables).
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from schemas.config import HookstreamConfig
from schemas.config_loader import load_config

SW_NEW = "whsec_" + base64.b64encode(b"standard-webhooks-new-key-32byte").decode()
SW_OLD = "whsec_" + base64.b64encode(b"standard-webhooks-old-key-32byte").decode()
STRIPE_NEW = "whsec_stripe_new_0123456789"
STRIPE_OLD = "whsec_stripe_old_0123456789"
GITHUB_SECRET = "It's a Secret to Everybody"
GENERIC_SECRET = "generic-secret"
SECRETS = {
    # Rotation: the variable holds the new and the old secret, comma-separated.
    "GW_SW_SECRET": f"{SW_NEW},{SW_OLD}",
    "GW_STRIPE_SECRET": f"{STRIPE_NEW}, {STRIPE_OLD}",
    "GW_GITHUB_SECRET": GITHUB_SECRET,
    "GW_GENERIC_SECRET": GENERIC_SECRET,
}

TEMPLATE = """
version: 1
kafka:
  bootstrap_servers: {bootstrap}
  topic_prefix: {prefix}
  partitions: 4
  produce_timeout_s: 5
gateway:
  host: 127.0.0.1
  port: 0
  max_body_bytes: 65536
  client_ip_header: X-Forwarded-For
  trusted_proxies: [127.0.0.1/32]
{gateway_extra}
sources:
  - name: sw
    signature: {{scheme: standard-webhooks, secret_env: GW_SW_SECRET}}
  - name: stripe
    signature: {{scheme: stripe, secret_env: GW_STRIPE_SECRET}}
  - name: gh
    signature: {{scheme: github, secret_env: GW_GITHUB_SECRET}}
  - name: generic
    signature:
      scheme: hmac-sha256
      secret_env: GW_GENERIC_SECRET
      header: X-Sig
      encoding: base64
      timestamp_header: X-Sig-Timestamp
    id_header: X-Delivery
  - name: open
    signature: {{scheme: none}}
  - name: limited
    signature: {{scheme: none}}
    rate_limit: {{requests_per_s: 0.5, burst: 2}}
  - name: guarded
    signature: {{scheme: none}}
    allow_ips: [203.0.113.0/24, "2001:db8::/32"]
  - name: keyed
    signature: {{scheme: none}}
    partition_key: customer.id
"""


def write_config_text(bootstrap: str, prefix: str, *, gateway_extra: str = "") -> str:
    return TEMPLATE.format(bootstrap=bootstrap, prefix=prefix, gateway_extra=gateway_extra)


def write_config(directory: Path, bootstrap: str, *, gateway_extra: str = "") -> Path:
    path = directory / f"gateway-{uuid.uuid4().hex[:8]}.yaml"
    prefix = f"t{uuid.uuid4().hex[:10]}"
    path.write_text(write_config_text(bootstrap, prefix, gateway_extra=gateway_extra))
    return path


def gateway_config(directory: Path, bootstrap: str, *, gateway_extra: str = "") -> HookstreamConfig:
    path = write_config(directory, bootstrap, gateway_extra=gateway_extra)
    return load_config(path, env=SECRETS)
