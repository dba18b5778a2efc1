"""The secured local broker for tests: ``scripts/kafka up --secure`` in a state dir of its own.

One broker per test session (it takes ~15 s to start): a plaintext listener, SASL_SSL with a
SCRAM user, SSL with client certificates and SASL_PLAINTEXT, on five consecutive free ports
(the controller's is the second). The shared
plaintext broker of ``make test`` is never touched: this one has its own state dir and ports,
and ``KAFKA_BOOTSTRAP_SERVERS`` is removed from the script's environment (with it set, the
script would start nothing).
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from schemas.config import KafkaSettings
from tests.support.broker import kill_pid_file, private_env
from tests.support.stack import REPO_ROOT

KAFKA_SCRIPT = REPO_ROOT / "scripts" / "kafka"
PASSWORD_ENV = "HOOKSTREAM_TEST_KAFKA_PASSWORD"


@dataclass(frozen=True)
class SecureKafka:
    plaintext: str  # host:port of the plaintext listener (brokers, tools)
    sasl_ssl: str  # SASL_SSL, SCRAM-SHA-512 / SCRAM-SHA-256 / PLAIN
    mtls: str  # SSL with required client certificates
    sasl_plaintext: str  # SASL without TLS, the same mechanisms as sasl_ssl
    tls_dir: Path
    user: str
    password: str

    @property
    def ca(self) -> str:
        return str(self.tls_dir / "ca.pem")

    def sasl(self, **overrides: object) -> KafkaSettings:
        """Settings for the SASL_SSL listener as this user (``overrides`` replace fields)."""
        fields: dict[str, object] = {
            "bootstrap_servers": self.sasl_ssl,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": self.user,
            "sasl_password_env": PASSWORD_ENV,
            "sasl_password": SecretStr(self.password),
            "ssl_cafile": self.ca,
        }
        fields.update(overrides)
        return KafkaSettings.model_validate(fields)

    def address(self, protocol: str) -> str:
        """The listener for ``protocol`` (SASL_SSL or SASL_PLAINTEXT)."""
        return {"SASL_SSL": self.sasl_ssl, "SASL_PLAINTEXT": self.sasl_plaintext}[protocol]

    def mutual_tls(self, **overrides: object) -> KafkaSettings:
        fields: dict[str, object] = {
            "bootstrap_servers": self.mtls,
            "security_protocol": "SSL",
            "ssl_cafile": self.ca,
            "ssl_certfile": str(self.tls_dir / "client.pem"),
            "ssl_keyfile": str(self.tls_dir / "client.key"),
        }
        fields.update(overrides)
        return KafkaSettings.model_validate(fields)

    def config_block(self, protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512") -> str:
        """The ``kafka:`` security lines of a config file for a SASL listener."""
        block = (
            f"  security_protocol: {protocol}\n"
            f"  sasl_mechanism: {mechanism}\n"
            f"  sasl_username: {self.user}\n"
            f"  sasl_password_env: {PASSWORD_ENV}\n"
        )
        return block + (f"  ssl_cafile: {self.ca}\n" if protocol == "SASL_SSL" else "")


def _free_run(count: int) -> int:
    """A base port with ``count`` consecutive free ports after it (the script's layout)."""
    for _ in range(200):
        base = random.randrange(30_000, 45_000)  # noqa: S311 - not a secret
        with contextlib.ExitStack() as held:
            try:
                for port in range(base, base + count):
                    probe = held.enter_context(socket.socket())
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


@contextlib.contextmanager
def secure_broker(state_dir: Path) -> Iterator[SecureKafka]:
    """Start the secured broker (a failure to start raises: the tests must not skip), yield
    how to reach it, stop it."""
    port = _free_run(5)
    # The controller port too: .ci/run exports its own broker's KAFKA_CONTROLLER_PORT, which
    # the script would otherwise take (and find in use).
    env = private_env(state_dir, KAFKA_PORT=str(port), KAFKA_CONTROLLER_PORT=str(port + 1))
    up = subprocess.run(
        [str(KAFKA_SCRIPT), "up", "--secure"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if up.returncode != 0:
        raise RuntimeError(f"scripts/kafka up --secure failed:\n{up.stderr[-4000:]}")
    try:
        kafka = state_dir / "kafka"
        yield SecureKafka(
            plaintext=up.stdout.strip().splitlines()[-1],
            sasl_ssl=f"127.0.0.1:{port + 2}",
            mtls=f"127.0.0.1:{port + 3}",
            sasl_plaintext=f"127.0.0.1:{port + 4}",
            tls_dir=kafka / "tls",
            user=(kafka / "sasl" / "user").read_text().strip(),
            password=(kafka / "sasl" / "password").read_text().strip(),
        )
    finally:
        kill_pid_file(state_dir / "kafka" / "kafka.pid")  # its data is thrown away
