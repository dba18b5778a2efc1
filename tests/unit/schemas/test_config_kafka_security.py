"""The TLS and SASL fields of ``kafka:``: wrong combinations fail at load, in the file's terms,
and the password comes only from its environment variable and is never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config_loader import load_config
from schemas.errors import ConfigError

PASSWORD = "s3cret-Kafka-pw"


def _load(tmp_path: Path, kafka: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "hookstream.yaml"
    path.write_text(f"kafka:\n{kafka}sources: []\n")
    try:
        load_config(path, env=env or {})
    except ConfigError as exc:
        return exc.problems
    return []


def test_a_sasl_ssl_block_loads_with_the_password_from_its_variable(tmp_path: Path) -> None:
    path = tmp_path / "hookstream.yaml"
    path.write_text(
        "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n"
        "  sasl_username: svc\n  sasl_password_env: KAFKA_PW\nsources: []\n"
    )
    kafka = load_config(path, env={"KAFKA_PW": PASSWORD}).kafka
    assert kafka.sasl_password is not None
    assert kafka.sasl_password.get_secret_value() == PASSWORD
    assert kafka.ssl_check_hostname is True
    assert PASSWORD not in repr(kafka)
    assert PASSWORD not in str(kafka.model_dump())


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            "  sasl_mechanism: PLAIN\n",
            "hookstream.yaml:2: kafka.sasl_mechanism: is only used with security_protocol "
            "SASL_PLAINTEXT or SASL_SSL, not PLAINTEXT",
        ),
        (
            "  security_protocol: SASL_PLAINTEXT\n  ssl_cafile: ca.pem\n",
            "hookstream.yaml:3: kafka.ssl_cafile: is only used with security_protocol SSL or "
            "SASL_SSL, not SASL_PLAINTEXT",
        ),
        (
            "  security_protocol: SASL_SSL\n",
            "kafka: security_protocol SASL_SSL needs sasl_mechanism, sasl_username, "
            "sasl_password_env (or sasl_password_file)",
        ),
        (
            "  security_protocol: SSL\n  ssl_certfile: client.pem\n",
            "ssl_certfile and ssl_keyfile go together",
        ),
        ("  security_protocol: TLS\n", "kafka.security_protocol"),
        (
            "  security_protocol: SASL_SSL\n  sasl_mechanism: OAUTHBEARER\n"
            "  sasl_username: u\n  sasl_password_env: PW\n",
            "kafka.sasl_mechanism",
        ),
    ],
)
def test_wrong_combinations_fail_naming_the_field(
    tmp_path: Path, block: str, expected: str
) -> None:
    problems = _load(tmp_path, block, env={"PW": PASSWORD})
    assert any(expected in p for p in problems), problems


def test_the_password_is_never_written_in_the_file(tmp_path: Path) -> None:
    block = (
        "  security_protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n  sasl_username: u\n"
        f"  sasl_password: {PASSWORD}\n"
    )
    problems = _load(tmp_path, block)
    assert any("kafka.sasl_password: secrets are not written in the file" in p for p in problems)
    assert not any(PASSWORD in p for p in problems)


def test_a_missing_password_variable_is_named(tmp_path: Path) -> None:
    block = (
        "  security_protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n  sasl_username: u\n"
        "  sasl_password_env: KAFKA_PW\n"
    )
    problems = _load(tmp_path, block)
    assert any(
        "kafka.sasl_password_env: environment variable KAFKA_PW is not set" in p for p in problems
    )
