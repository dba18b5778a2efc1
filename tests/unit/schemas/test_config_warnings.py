"""Settings fine on a laptop and wrong in production: warned about, the file still loads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from schemas.config_loader import config_warnings, load_config

BASE = """\
kafka:
  bootstrap_servers: '{bootstrap}'
  replication_factor: {replicas}
  security_protocol: {protocol}
gateway:
  host: {host}
worker:
  allow_private_networks: {private}
sources:
  - name: open
    signature: {{scheme: none}}
  - name: signed
    signature: {{scheme: github, secret_env: GH_SECRET}}
"""
ENV = {"GH_SECRET": "gh-secret-value"}


def warnings_for(
    tmp_path: Path,
    *,
    bootstrap: str = "127.0.0.1:9092",
    replicas: int = 1,
    host: str = "127.0.0.1",
    private: str = "false",
    protocol: str = "PLAINTEXT",
) -> tuple[Path, list[str]]:
    path = tmp_path / "flows.yaml"
    text = BASE.format(
        bootstrap=bootstrap, replicas=replicas, host=host, private=private, protocol=protocol
    )
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path, config_warnings(path, load_config(path, env=ENV))


def test_a_local_development_file_has_no_warnings(tmp_path: Path) -> None:
    assert warnings_for(tmp_path) == (tmp_path / "flows.yaml", [])


@pytest.mark.parametrize(
    "bootstrap", ["localhost:9092", "[::1]:9092", "127.0.0.1:9092,127.0.0.2:9093", "::1"]
)
def test_one_replica_on_a_local_broker_is_fine(tmp_path: Path, bootstrap: str) -> None:
    assert warnings_for(tmp_path, bootstrap=bootstrap)[1] == []


def test_one_replica_on_a_remote_broker_is_warned_about(tmp_path: Path) -> None:
    path, warnings = warnings_for(
        tmp_path, bootstrap="127.0.0.1:9092,kafka-1.prod:9092", protocol="SSL"
    )
    assert warnings == [
        f"{path}:3: kafka.replication_factor: 1 copy of each event on a broker that is not "
        "local (kafka-1.prod): losing that broker loses webhooks already answered 2xx; "
        "use 3 in production"
    ]
    assert (
        warnings_for(tmp_path, bootstrap="kafka-1.prod:9092", replicas=3, protocol="SSL")[1] == []
    )


def test_unsigned_source_on_a_public_address_is_warned_about(tmp_path: Path) -> None:
    path, warnings = warnings_for(tmp_path, host="0.0.0.0")  # noqa: S104 - the case tested
    assert warnings == [
        f"{path}:11: sources[0].signature.scheme: source 'open' accepts unsigned webhooks on "
        "0.0.0.0: anyone who reaches the gateway can post events; sign them in production"
    ]


def test_private_networks_for_every_sink_is_warned_about(tmp_path: Path) -> None:
    path, warnings = warnings_for(tmp_path, private="true")
    assert warnings == [
        f"{path}:8: worker.allow_private_networks: every sink and lookup may call loopback "
        "and private addresses, so a templated URL can reach internal services (SSRF); meant "
        "for local simulators, use allow_private on the single sink or lookup that needs it "
        "in production"
    ]


def test_a_setting_left_at_its_default_points_at_its_section(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(
        "kafka:\n  bootstrap_servers: broker.internal:9092\n"
        "sources:\n  - {name: a, signature: {scheme: github, secret_env: GH_SECRET}}\n",
        encoding="utf-8",
    )
    warnings = config_warnings(path, load_config(path, env=ENV))
    # The replication factor left at its default is automatic (min(3, brokers)): no warning.
    assert [w.split(":", 3)[1:3] for w in warnings] == [["1", " kafka.security_protocol"]]


def test_plaintext_on_a_remote_broker_is_warned_about(tmp_path: Path) -> None:
    path, warnings = warnings_for(tmp_path, bootstrap="kafka-1.prod:9092", replicas=3)
    assert warnings == [
        f"{path}:4: kafka.security_protocol: PLAINTEXT on a broker that is not local "
        "(kafka-1.prod): no login and no encryption, so anyone on the network path can read "
        "and write every event; use SASL_SSL (or SSL) in production"
    ]


SASL = """\
kafka:
  bootstrap_servers: '{bootstrap}'
  replication_factor: 3
  security_protocol: {protocol}
  sasl_mechanism: {mechanism}
  sasl_username: hookstream
  sasl_password_env: KAFKA_PASSWORD
sources:
  - {{name: signed, signature: {{scheme: github, secret_env: GH_SECRET}}}}
"""


def sasl_warnings(tmp_path: Path, *, bootstrap: str, protocol: str, mechanism: str) -> list[str]:
    path = tmp_path / "flows.yaml"
    path.write_text(
        SASL.format(bootstrap=bootstrap, protocol=protocol, mechanism=mechanism), encoding="utf-8"
    )
    env = {**ENV, "KAFKA_PASSWORD": "kafka-password-value"}
    warnings = config_warnings(path, load_config(path, env=env))
    assert not any("kafka-password-value" in w for w in warnings)
    return warnings


def test_sasl_plaintext_on_a_remote_broker_is_warned_about(tmp_path: Path) -> None:
    warnings = sasl_warnings(
        tmp_path, bootstrap="kafka-1.prod:9092", protocol="SASL_PLAINTEXT", mechanism="PLAIN"
    )
    assert warnings == [
        f"{tmp_path / 'flows.yaml'}:4: kafka.security_protocol: SASL_PLAINTEXT on a broker "
        "that is not local (kafka-1.prod): the password crosses the network unencrypted, and "
        "every event travels unencrypted; use SASL_SSL in production"
    ]


def test_sasl_plaintext_with_scram_names_what_is_exposed(tmp_path: Path) -> None:
    warnings = sasl_warnings(
        tmp_path,
        bootstrap="kafka-1.prod:9092",
        protocol="SASL_PLAINTEXT",
        mechanism="SCRAM-SHA-512",
    )
    assert len(warnings) == 1
    assert "kafka.security_protocol: SASL_PLAINTEXT on a broker that is not local" in warnings[0]
    assert "the SCRAM-SHA-512 login crosses the network unencrypted" in warnings[0]


@pytest.mark.parametrize(
    ("bootstrap", "protocol"),
    [
        ("localhost:9092", "SASL_PLAINTEXT"),  # loopback: nothing crosses a network
        ("kafka-1.prod:9092", "SASL_SSL"),
    ],
)
def test_sasl_over_tls_or_on_loopback_is_fine(
    tmp_path: Path, bootstrap: str, protocol: str
) -> None:
    assert sasl_warnings(tmp_path, bootstrap=bootstrap, protocol=protocol, mechanism="PLAIN") == []
