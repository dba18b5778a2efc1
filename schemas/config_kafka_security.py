"""How hookstream authenticates to Kafka and encrypts the connection: TLS and SASL.

Its own module because the checks between these fields (a SASL mechanism needs a SASL
protocol, a client certificate needs its key) are a block of their own; :class:`KafkaSettings`
in :mod:`schemas.config` builds on :class:`_KafkaSecurity`, so the fields sit flat under
``kafka:`` in the file. :mod:`streams.kafka.connection` turns them into the keyword arguments of
every aiokafka client and into Faust's credentials: one place, so no client is left plaintext.

OAUTHBEARER is not offered: aiokafka takes it only as a token-provider object (code that fetches
and refreshes tokens from the identity provider), which a config file cannot describe.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from schemas.config_base import ConfigModel

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})


class _KafkaSecurity(ConfigModel):
    """The TLS and SASL fields of ``kafka:``; validated together, in the file's terms."""

    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="How clients talk to the brokers: PLAINTEXT (no encryption, no login; a "
        "local broker), SSL (TLS, optionally with a client certificate), SASL_PLAINTEXT "
        "(login without encryption) or SASL_SSL (login over TLS: what managed clusters use).",
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None,
        description="The SASL login method, required with SASL_PLAINTEXT and SASL_SSL: PLAIN "
        "(Confluent Cloud's API keys), SCRAM-SHA-256 or SCRAM-SHA-512 (Amazon MSK, Aiven, "
        "Redpanda). OAUTHBEARER is not supported (aiokafka needs code to fetch its tokens).",
    )
    sasl_username: str | None = Field(
        default=None,
        description="The SASL user name (Confluent Cloud: the API key); required with a SASL "
        "security_protocol.",
    )
    sasl_password_env: str | None = Field(
        default=None,
        description="The name of the environment variable that holds the SASL password "
        "(Confluent Cloud: the API secret); required with a SASL security_protocol. The "
        "password is never written in the file, and never logged.",
    )
    sasl_password_file: str | None = Field(
        default=None,
        description="Instead of sasl_password_env: a file holding the SASL password (a mounted "
        "Kubernetes or Docker secret), relative to the config file's folder unless absolute.",
    )
    sasl_password: SecretStr | None = Field(default=None, exclude=True)
    ssl_cafile: str | None = Field(
        default=None,
        description="PEM file of the certificate authorities that signed the brokers' "
        "certificates. Unset: the system's trusted authorities (enough for managed clusters "
        "with public certificates). Only with SSL or SASL_SSL.",
    )
    ssl_certfile: str | None = Field(
        default=None,
        description="PEM file of this client's certificate (chain), for mutual TLS (e.g. MSK "
        "with TLS client authentication, Aiven's default); given with ssl_keyfile. Only with "
        "SSL or SASL_SSL.",
    )
    ssl_keyfile: str | None = Field(
        default=None,
        description="PEM file of the private key of ssl_certfile (unencrypted). Only with SSL "
        "or SASL_SSL.",
    )
    ssl_check_hostname: bool = Field(
        default=True,
        description="Check that each broker's certificate names the host connected to. Turn "
        "off only for a broker reached by an address its certificate does not list; the "
        "certificate is still checked against ssl_cafile.",
    )

    @field_validator("sasl_mechanism", "sasl_username", "sasl_password_env", "sasl_password_file")
    @classmethod
    def _sasl_needs_sasl_protocol(cls, value: str | None, info: ValidationInfo) -> str | None:
        protocol = info.data.get("security_protocol")
        if value is not None and protocol is not None and protocol not in SASL_PROTOCOLS:
            raise ValueError(
                f"is only used with security_protocol SASL_PLAINTEXT or SASL_SSL, not {protocol}"
            )
        return value

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _tls_file_needs_tls(cls, value: str | None, info: ValidationInfo) -> str | None:
        protocol = info.data.get("security_protocol")
        if value is not None and protocol is not None and protocol not in TLS_PROTOCOLS:
            raise ValueError(
                f"is only used with security_protocol SSL or SASL_SSL, not {protocol} "
                "(a plaintext connection has no TLS)"
            )
        if value is not None and not value.strip():
            raise ValueError("must be a file path, not empty")
        return value

    @model_validator(mode="after")
    def _complete(self) -> _KafkaSecurity:
        problems = []
        if self.security_protocol in SASL_PROTOCOLS:
            missing = [
                name for name in ("sasl_mechanism", "sasl_username") if getattr(self, name) is None
            ]
            if self.sasl_password_env is None and self.sasl_password_file is None:
                missing.append("sasl_password_env (or sasl_password_file)")
            if missing:
                problems.append(
                    f"security_protocol {self.security_protocol} needs {', '.join(missing)}"
                )
        if self.sasl_password_env is not None and self.sasl_password_file is not None:
            problems.append("set sasl_password_env or sasl_password_file, not both")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            problems.append(
                "ssl_certfile and ssl_keyfile go together (mutual TLS): give both or neither"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self
