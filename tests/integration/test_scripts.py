"""The developer scripts as a user runs them: `make kafka-up` against a given broker, `make demo`
without PostgreSQL, the compose demo's poster and healthchecks, and `make compose-check`.

No broker is started or stopped here: `kafka-up` is pointed (KAFKA_BOOTSTRAP_SERVERS) at the
broker of the test run or at a closed port.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import REPO_ROOT, SECRETS, Proc, running_stack

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
UPDATES_DONE = "demo: 6 webhooks → 6 AI-derived CRM updates."


def run(
    args: list[str], env: Mapping[str, str], timeout_s: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=dict(env),
        timeout=timeout_s,
        check=False,
    )


def make(*targets: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    # -o: never (re)install the shared venv from inside a test; `make test` made it.
    return run(["make", "-s", "-o", ".venv/.installed", *targets], env)


def closed_port() -> int:
    """A port nothing listens on: bound to learn a free number, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def compose_check_module() -> Any:
    path = REPO_ROOT / "scripts" / "compose_check.py"
    spec = importlib.util.spec_from_file_location("compose_check", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- make kafka-up with KAFKA_BOOTSTRAP_SERVERS ----------------------------------------------


def test_kafka_up_checks_the_broker_named_by_the_variable(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    env["HOOKSTREAM_STATE_DIR"] = str(tmp_path)
    done = make("kafka-up", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == kafka_bootstrap
    assert f"a broker answers at {kafka_bootstrap} (KAFKA_BOOTSTRAP_SERVERS)" in done.stderr
    assert not (tmp_path / "kafka" / "kafka.pid").exists()  # started nothing


def test_kafka_up_fails_clearly_when_nothing_answers(tmp_path: Path) -> None:
    address = f"127.0.0.1:{closed_port()}"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": address, "KAFKA_CHECK_TIMEOUT_S": "2"}
    env["HOOKSTREAM_STATE_DIR"] = str(tmp_path)
    done = make("kafka-up", env=env)
    assert done.returncode != 0
    assert done.stdout == ""  # no address for a caller to go on with
    assert (
        f"kafka: error: no Kafka broker answers at {address} (KAFKA_BOOTSTRAP_SERVERS) within 2s"
        in done.stderr
    )
    assert "unset it" in done.stderr
    assert not (tmp_path / "kafka" / "kafka.pid").exists()


# -- make demo --------------------------------------------------------------------------------


def test_make_demo_runs_without_postgresql(kafka_bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HOOKSTREAM_TEST_POSTGRES_DSN"}
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    done = make("demo", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert UPDATES_DONE in done.stdout
    # scripts/with-postgres announces itself whenever it runs (start or reuse).
    assert "with-postgres" not in done.stderr


# -- the compose demo: its poster and its healthchecks, run on this machine --------------------


def healthcheck_argv(service: str) -> list[str]:
    """The healthcheck command of ``service`` as docker-compose.yml has it (CMD form)."""
    project = compose_check_module().load_project([COMPOSE_FILE], [])
    test: list[str] = project["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return [sys.executable if word == "python" else word for word in test[1:]]


async def test_compose_demo_poster_and_healthchecks(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The demo service's command against running services, twice: each run gets its updates.

    Worker and sinks run with the compose file's --metrics-port, and the compose file's own
    healthcheck commands (port swapped for a free one) must pass against them.
    """
    async with running_stack(kafka_bootstrap, tmp_path, roles=("gateway",)) as stack:
        metrics = {"worker": closed_port(), "sinks": closed_port()}
        for role, port in metrics.items():
            args = [role, "-c", str(stack.config_path), "-l", "info", "--metrics-port", str(port)]
            proc = Proc(name=role, args=args, env=stack.env, log_path=tmp_path / f"{role}.log")
            stack.procs[role] = proc
            await proc.start()
        for role, port in metrics.items():
            argv = [w.replace(":9464/", f":{port}/") for w in healthcheck_argv(role)]
            assert run(argv, os.environ, timeout_s=30).returncode == 0, role

        env = {**os.environ, **SECRETS}
        poster = [
            sys.executable,
            "scripts/demo.py",
            "--gateway-url",
            stack.gateway_url,
            "--crm-url",
            stack.crm.base_url,
            "--timeout-s",
            "90",
        ]
        for attempt in (1, 2):  # the second run's webhooks are new, not deduplicated away
            done = run(poster, env)
            assert done.returncode == 0, (attempt, done.stdout, done.stderr)
            assert done.stdout.count("→ 202 ") == 6
            assert UPDATES_DONE in done.stdout
            update_lines = [line for line in done.stdout.splitlines() if line.startswith("  cus_")]
            assert len(update_lines) == 6


def test_compose_healthchecks_fail_when_nothing_serves() -> None:
    argv = [w.replace(":9464/", f":{closed_port()}/") for w in healthcheck_argv("sinks")]
    assert run(argv, os.environ, timeout_s=30).returncode != 0


# -- make compose-check -------------------------------------------------------------------------


def test_compose_check_accepts_the_compose_file() -> None:
    done = make("compose-check", env=os.environ)
    assert done.returncode == 0, done.stderr
    assert "valid (compose-go, the Compose Specification's JSON Schema)" in done.stdout
    assert "dev ai-sim, dev crm-sim, gateway, sinks, worker" in done.stdout


def test_compose_host_ports_come_from_variables() -> None:
    module = compose_check_module()
    default = module.load_project([COMPOSE_FILE], [])["services"]
    moved = module.load_project(
        [COMPOSE_FILE], ["GATEWAY_HOST_PORT=18080", "BROKER_HOST_PORT=19999"]
    )["services"]
    assert [p["published"] for p in default["gateway"]["ports"]] == ["8080"]
    assert [p["published"] for p in moved["gateway"]["ports"]] == ["18080"]
    assert [p["target"] for p in moved["gateway"]["ports"]] == [8080]
    advertised = moved["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "HOST://localhost:19999" in advertised
    assert default["demo"]["environment"]["HELPDESK_WEBHOOK_SECRET"] == "demo-helpdesk-secret"


def broken_copy(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    """docker-compose.yml with text replaced, its relative paths made absolute."""
    text = COMPOSE_FILE.read_text()
    text = text.replace("./examples/", f"{REPO_ROOT}/examples/").replace(
        "build: .", f"build: {REPO_ROOT}"
    )
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "docker-compose.yml"
    path.write_text(text)
    return path


def compose_check(path: Path, *env: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "scripts/compose_check.py", str(path)]
    for item in env:
        args += ["-e", item]
    return run(args, os.environ)


@pytest.mark.parametrize(
    ("replacement", "env", "message"),
    [
        pytest.param(
            ("      <<: *health\n", "      <<: *health\n      tset: [CMD, 'true']\n"),
            (),
            "additional properties 'tset' not allowed",
            id="schema",
        ),
        pytest.param(
            (
                "      crm-sim:\n        condition: service_healthy\n\nvolumes:",
                "      crm-sm:\n        condition: service_healthy\n\nvolumes:",
            ),
            (),
            'depends on undefined service "crm-sm"',
            id="reference",
        ),
        pytest.param(
            ("name: hookstream", "name: hookstream"),
            ("GATEWAY_HOST_PORT=80x",),
            "Invalid hostPort: 80x",
            id="host-port-variable",
        ),
    ],
)
def test_compose_check_refuses_what_docker_compose_refuses(
    tmp_path: Path, replacement: tuple[str, str], env: tuple[str, ...], message: str
) -> None:
    done = compose_check(broken_copy(tmp_path, replacement), *env)
    assert done.returncode == 1
    assert message in done.stderr


def test_compose_check_refuses_services_that_disagree(tmp_path: Path) -> None:
    path = broken_copy(
        tmp_path,
        (
            '"--metrics-port", "9464"]\n    volumes:\n      - /',
            '"--metrics-prot", "9464"]\n    volumes:\n      - /',
        ),
        ("HOOKSTREAM_CRM_URL: http://crm-sim:8092", "HOOKSTREAM_CRM_URL: http://crm-sim:8093"),
        ("KAFKA_BOOTSTRAP_SERVERS: kafka:19092", "KAFKA_BOOTSTRAP_SERVERS: kafka:9092"),
        ('"http://127.0.0.1:8080/readyz"', '"http://127.0.0.1:8081/readyz"'),
    )
    done = compose_check(path)
    assert done.returncode == 1
    problems = done.stderr
    # The worker's command, whose --metrics-prot the CLI refuses (the first with --metrics-port).
    assert "services.worker: `hookstream worker" in problems
    assert "refused by the CLI: unrecognized arguments: --metrics-prot 9464" in problems
    assert "services.worker: no --metrics-port for its healthcheck to ask" in problems
    assert "crm-sim listens on 8092, not 8093" in problems
    assert "kafka.bootstrap_servers kafka:9092: not a listener kafka advertises" in problems
    assert "healthcheck http://127.0.0.1:8081/readyz: serves /healthz, /readyz on 8080" in problems


def test_compose_check_refuses_a_missing_secret(tmp_path: Path) -> None:
    done = compose_check(broken_copy(tmp_path, ("  AI_API_KEY: ${AI_API_KEY:-demo-ai-key}\n", "")))
    assert done.returncode == 1
    # The flows file loaded with the worker's environment, and the simulator that needs the key.
    assert "services.worker: /etc/hookstream/flows.yaml" in done.stderr
    assert "providers[0].api_key_env: environment variable AI_API_KEY is not set" in done.stderr
    assert "services.ai-sim: --api-key-env AI_API_KEY: AI_API_KEY is not in its environment" in (
        done.stderr
    )
