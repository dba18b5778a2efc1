"""One place builds every client's connection: the kwargs, the TLS context, Faust's credentials."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import SecretStr

from schemas.config import KafkaSettings
from schemas.errors import ConfigError
from streams.kafka.connection import client_kwargs, describe, faust_credentials, ssl_context

PASSWORD = "s3cret-Kafka-pw"


def _sasl(**fields: object) -> KafkaSettings:
    base: dict[str, object] = {
        "bootstrap_servers": "broker:9096",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": "svc",
        "sasl_password_env": "KAFKA_PW",
        "sasl_password": SecretStr(PASSWORD),
    }
    base.update(fields)
    return KafkaSettings.model_validate(base)


def test_plaintext_has_no_tls_and_no_login() -> None:
    kwargs = client_kwargs(KafkaSettings(bootstrap_servers="a:1,b:2"))
    assert kwargs == {"bootstrap_servers": "a:1,b:2", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(KafkaSettings()) is None


def test_sasl_ssl_gives_every_client_the_login_and_one_shared_context() -> None:
    kwargs = client_kwargs(_sasl())
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "svc"
    assert kwargs["sasl_plain_password"] == PASSWORD
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert client_kwargs(_sasl())["ssl_context"] is context  # built once
    credentials = faust_credentials(_sasl())
    assert isinstance(credentials, SASLCredentials)
    assert credentials.ssl_context is context
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert PASSWORD not in repr(credentials)
    assert PASSWORD not in describe(_sasl())


def test_hostname_checking_can_be_turned_off() -> None:
    assert not client_kwargs(_sasl(ssl_check_hostname=False))["ssl_context"].check_hostname


def test_ssl_gives_faust_the_tls_context() -> None:
    credentials = faust_credentials(KafkaSettings(security_protocol="SSL"))
    assert isinstance(credentials, SSLCredentials)


def test_a_missing_password_names_its_variable_at_start() -> None:
    with pytest.raises(
        ConfigError, match=r"kafka\.sasl_password_env: environment variable KAFKA_PW"
    ):
        client_kwargs(_sasl(sasl_password=None))


def test_an_unreadable_ca_file_names_the_field(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=re.escape(f"kafka.ssl_cafile: cannot use {missing}")):
        ssl_context(_sasl(ssl_cafile=str(missing)))
