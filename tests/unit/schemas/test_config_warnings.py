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
) -> tuple[Path, list[str]]:
    path = tmp_path / "flows.yaml"
    text = BASE.format(bootstrap=bootstrap, replicas=replicas, host=host, private=private)
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
    path, warnings = warnings_for(tmp_path, bootstrap="127.0.0.1:9092,kafka-1.prod:9092")
    assert warnings == [
        f"{path}:3: kafka.replication_factor: 1 copy of each event on a broker that is not "
        "local (kafka-1.prod): losing that broker loses webhooks already answered 2xx; "
        "use 3 in production"
    ]
    assert warnings_for(tmp_path, bootstrap="kafka-1.prod:9092", replicas=3)[1] == []


def test_unsigned_source_on_a_public_address_is_warned_about(tmp_path: Path) -> None:
    path, warnings = warnings_for(tmp_path, host="0.0.0.0")  # noqa: S104 - the case tested
    assert warnings == [
        f"{path}:10: sources[0].signature.scheme: source 'open' accepts unsigned webhooks on "
        "0.0.0.0: anyone who reaches the gateway can post events; sign them in production"
    ]


def test_private_networks_for_every_sink_is_warned_about(tmp_path: Path) -> None:
    path, warnings = warnings_for(tmp_path, private="true")
    assert warnings == [
        f"{path}:7: worker.allow_private_networks: every sink and lookup may call loopback "
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
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{path}:1: kafka.replication_factor: 1 copy of each event")
