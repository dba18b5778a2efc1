"""The installed ``hookstream`` command on expected failures: one line on stderr that says what to
do, no traceback, and the exit status of streams/cli/exits.py; bad arguments refused."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import orjson
import pytest
import yaml

from schemas.config import KafkaSettings
from streams.kafka.admin import create_topics
from tests.integration.gateway_config import GITHUB_SECRET, SECRETS, write_config
from tests.support.kafka import read_all
from tests.support.topics import SHORT_NAMES

HOOKSTREAM = str(Path(sys.executable).with_name("hookstream"))  # the console script pip made


def hookstream(
    *args: str, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HOOKSTREAM, *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **SECRETS, **(env or {})},
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """stderr, asserted to be a single ``hookstream: …`` line."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hookstream: "), result.stderr
    return lines[0]


@pytest.fixture
def config(tmp_path: Path, kafka_bootstrap: str) -> Path:
    """A config with a fresh topic prefix: none of its topics exist yet."""
    return write_config(tmp_path, kafka_bootstrap)


def prefix_of(config: Path) -> str:
    line = next(x for x in config.read_text().splitlines() if "topic_prefix:" in x)
    return line.split(":", 1)[1].strip()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process (here: this one) listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_version_is_the_installed_packages() -> None:
    result = hookstream("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"hookstream {version('hookstream')}\n"


def test_gateway_on_a_busy_port_says_so_and_exits_5(config: Path, busy_port: int) -> None:
    result = hookstream("gateway", "-c", str(config), "--port", str(busy_port), "-l", "error")
    assert result.returncode == 5
    line = one_line(result)
    assert f"port {busy_port} on 127.0.0.1 is in use" in line
    assert f"--port or gateway.port in {config}" in line


@pytest.mark.parametrize("role", ["worker", "sinks"])
def test_a_busy_metrics_port_is_found_before_the_worker_starts(
    role: str, config: Path, busy_port: int
) -> None:
    result = hookstream(role, "-c", str(config), "--metrics-port", str(busy_port))
    assert result.returncode == 5
    line = one_line(result)
    assert f"port {busy_port} on 127.0.0.1 is in use" in line
    assert "--metrics-port" in line
    # The same through the environment variable the option defaults to.
    result = hookstream(role, "-c", str(config), env={"HOOKSTREAM_METRICS_PORT": str(busy_port)})
    assert result.returncode == 5
    assert "$HOOKSTREAM_METRICS_PORT" in one_line(result)


@pytest.mark.parametrize(
    ("args", "topic"),
    [
        (["tail", "results"], "results"),
        (["tail", "dedupe"], "dedupe"),
        (["replay", "--topic", "events", "--from", "0", "--yes"], "events"),
        (["dlq", "list"], "dlq"),  # the DLQ asked about, not the redriven memory beside it
        (["publish", "--source", "open", "--allow-random-key", "-"], "events"),
    ],
)
def test_a_missing_topic_names_it_and_the_prefix_and_exits_4(
    args: list[str], topic: str, config: Path
) -> None:
    result = hookstream(*args, "-c", str(config), stdin=b'{"n": 1}\n')
    assert result.returncode == 4
    line = one_line(result)
    prefix = prefix_of(config)
    assert f"topic '{prefix}.{topic}' does not exist" in line
    assert f"check kafka.topic_prefix in {config} (now '{prefix}')" in line
    maker = "the worker" if topic == "dedupe" else "the gateway"
    assert line.endswith(f"; {maker} creates it when it first starts"), line


def test_a_missing_topic_not_hookstreams_is_not_promised_to_appear(config: Path) -> None:
    """A full name outside the configured prefix: nothing of hookstream's would create it."""
    other = f"orders-{uuid.uuid4().hex[:8]}.v1"
    result = hookstream("tail", "-c", str(config), other)
    assert result.returncode == 4
    line = one_line(result)
    assert f"topic '{other}' does not exist" in line
    assert "creates it" not in line
    assert f"check the name (hookstream's own topics are named {prefix_of(config)}.<name>" in line


@pytest.mark.parametrize(
    "args",
    [
        ["tail", "events"],
        ["dlq", "list"],
        ["replay", "--topic", "events", "--from", "0", "--yes"],
        ["publish", "--source", "open", "--allow-random-key", "-"],
        ["worker", "--wait-for-broker-s", "0"],
    ],
)
def test_an_unreachable_broker_is_one_line_and_exit_3(
    args: list[str], tmp_path: Path, closed_port: int
) -> None:
    address = f"127.0.0.1:{closed_port}"
    config = write_config(tmp_path, address)
    env = {"KAFKA_BOOTSTRAP_SERVERS": ""}  # the file's address, not the shared broker's
    result = hookstream(*args, "-c", str(config), env=env, stdin=b'{"n": 1}\n')
    assert result.returncode == 3
    line = one_line(result)
    assert f"check that Kafka runs at {address} (from kafka.bootstrap_servers in {config})" in line
    if args[0] == "dlq":  # the topic it names is the one asked about
        assert f"cannot read {prefix_of(config)}.dlq:" in line
    # The environment variable overrides the file: the message says where the address is from.
    result = hookstream(*args, "-c", str(config), env={"KAFKA_BOOTSTRAP_SERVERS": address})
    assert result.returncode == 3
    assert f"check that Kafka runs at {address} (from $KAFKA_BOOTSTRAP_SERVERS)" in one_line(result)


def test_tail_refuses_an_unknown_short_name_with_the_list(config: Path) -> None:
    result = hookstream("tail", "-c", str(config), "dedup")
    assert result.returncode == 2
    line = one_line(result)
    assert "topic 'dedup': not a topic hookstream owns" in line
    listed = line.split("give one of ", 1)[1].split(" or a full topic name", 1)[0]
    assert listed.split(", ") == SHORT_NAMES


def test_dlq_refuses_an_unknown_stage_with_the_list(config: Path) -> None:
    result = hookstream("dlq", "list", "-c", str(config), "--stage", "bogus")
    assert result.returncode == 2
    assert "invalid choice: 'bogus' (choose from 'enrich', 'ai', 'sink', 'replay')" in result.stderr


def test_publish_refuses_an_unknown_source_naming_the_configured_ones(config: Path) -> None:
    result = hookstream("publish", "-c", str(config), "--source", "nosuch", stdin=b'{"n": 1}\n')
    assert result.returncode == 2
    line = one_line(result)
    assert "--source 'nosuch' is not a source of" in line
    assert "its sources: sw, stripe, gh, generic, open, limited, guarded" in line


async def test_publish_without_a_key_rule_refuses_until_told_how_to_key(
    config: Path, kafka_bootstrap: str
) -> None:
    events = f"{prefix_of(config)}.events"
    await create_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), {events: {}}, partitions=2
    )
    body = b'{"account": "acc_1", "n": 1}\n{"account": "acc_2", "n": 2}\n'
    base = ("publish", "-c", str(config), "--source", "open")

    refused = hookstream(*base, stdin=body)
    assert refused.returncode == 2
    line = one_line(refused)
    assert "source 'open' has no partition_key" in line
    assert "--key-field" in line
    assert await read_all(kafka_bootstrap, events) == []  # nothing was published

    keyed = hookstream(*base, "--key-field", "account", stdin=body)
    assert keyed.returncode == 0, keyed.stderr
    assert [r.key for r in await read_all(kafka_bootstrap, events)] in (
        [b"acc_1", b"acc_2"],
        [b"acc_2", b"acc_1"],
    )

    random_key = hookstream(*base, "--allow-random-key", stdin=b'{"n": 3}\n')
    assert random_key.returncode == 0, random_key.stderr
    records = await read_all(kafka_bootstrap, events)
    (third,) = [r for r in records if r.json()["data"] == {"n": 3}]
    assert third.key == third.json()["id"].encode()  # keyed by its own id, as allowed


def test_config_check_takes_dash_c(tmp_path: Path, kafka_bootstrap: str) -> None:
    config = write_config(tmp_path, kafka_bootstrap)
    result = hookstream("config", "check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    count = len(yaml.safe_load(config.read_text())["sources"])
    assert count >= 7
    assert result.stdout.startswith(f"{config}: ok ({count} sources")


def test_an_unreadable_input_file_is_bad_input(config: Path) -> None:
    missing = str(uuid.uuid4())
    for args in (["publish", "--source", "open", "--allow-random-key"], ["sign", "--source", "gh"]):
        result = hookstream(*args, "-c", str(config), missing)
        assert result.returncode == 2
        assert one_line(result) == (
            f"hookstream: {missing}: cannot read the "
            f"{'JSON lines' if args[0] == 'publish' else 'body'}: No such file or directory"
        )


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """argparse's refusal: exit 2, its usage and one error line, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    return result.stderr.splitlines()[-1]


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_a_port_out_of_range_is_refused_before_anything_starts(config: Path, port: str) -> None:
    """99999 listened on 34463 (the kernel keeps 16 bits), -1 was a socket.gaierror traceback,
    and --metrics-port 99999 an OverflowError after the Faust worker had started."""
    for command, option in (
        ("gateway", "--port"),
        ("worker", "--metrics-port"),
        ("sinks", "--metrics-port"),
    ):
        result = hookstream(command, "-c", str(config), f"{option}={port}")
        line = usage_error(result)
        assert line.startswith(
            f"hookstream {command}: error: argument {option}: '{port}' is not"
        ), line
        assert "--metrics-host" not in line
    for simulator in ("ai-sim", "crm-sim", "slack-sim"):
        line = usage_error(hookstream("dev", simulator, "--port", port))
        assert line.startswith(f"hookstream dev {simulator}: error: argument --port: '{port}'")


def test_a_bad_metrics_port_variable_is_refused_only_where_it_is_read(config: Path) -> None:
    env = {"HOOKSTREAM_METRICS_PORT": "abc"}
    version = hookstream("--version", env=env)  # a ValueError traceback for every command
    assert version.returncode == 0, version.stderr
    check = hookstream("config", "check", "-c", str(config), env=env)
    assert check.returncode == 0, check.stderr
    line = usage_error(hookstream("worker", "-c", str(config), env=env))
    assert "argument --metrics-port: $HOOKSTREAM_METRICS_PORT='abc' is not a port number" in line


def test_schemas_export_to_a_path_that_cannot_be_a_directory_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    result = hookstream("schemas", "export", str(a_file / "x"))
    assert result.returncode == 2
    assert one_line(result).startswith(
        f"hookstream: {a_file / 'x'}: cannot write the JSON Schemas there: "
    )
    assert result.stdout == ""


def test_a_simulator_on_a_busy_port_says_so_and_exits_5(busy_port: int) -> None:
    for simulator in ("ai-sim", "crm-sim", "slack-sim"):
        result = hookstream("dev", simulator, "--port", str(busy_port))
        assert result.returncode == 5, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr == (
            f"hookstream dev {simulator}: port {busy_port} on 127.0.0.1 is in use by another "
            "process — stop that process or choose another with --port\n"
        )


def test_a_simulators_bad_setting_is_one_error_line_not_a_pydantic_dump() -> None:
    line = usage_error(hookstream("dev", "crm-sim", "--rate-500", "1.5"))
    assert line == (
        "hookstream dev crm-sim: error: argument --rate-500: Input should be less than or "
        "equal to 1 (got 1.5)"
    )


def without_secrets() -> dict[str, str]:
    """The environment with none of the config's secret variables."""
    return {k: v for k, v in os.environ.items() if k not in SECRETS}


def bare(*args: str, env: dict[str, str], stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    """``hookstream`` run with exactly ``env`` (hookstream() adds every secret)."""
    return subprocess.run(
        [HOOKSTREAM, *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


async def test_operator_commands_need_none_of_the_secrets(
    config: Path, kafka_bootstrap: str
) -> None:
    """tail, dlq list and publish use no signing secret nor the AI key: they ran only with
    every one of them set (exit 2 naming the first missing variable)."""
    prefix = prefix_of(config)
    await create_topics(
        KafkaSettings(bootstrap_servers=kafka_bootstrap),
        {f"{prefix}.{name}": {} for name in ("events", "dlq", "dlq-redriven")},
        partitions=1,
    )
    env = without_secrets()
    published = bare(
        "publish",
        "-c",
        str(config),
        "--source",
        "gh",
        "--key-field",
        "n",
        env=env,
        stdin=b'{"n": 1}\n',
    )
    assert published.returncode == 0, published.stderr
    tailed = bare("tail", "-c", str(config), "events", "--from-beginning", "--max", "1", env=env)
    assert tailed.returncode == 0, tailed.stderr
    assert orjson.loads(tailed.stdout)["value"]["data"] == {"n": 1}
    listed = bare("dlq", "list", "-c", str(config), env=env)
    assert listed.returncode == 0, listed.stderr
    # Nothing to list: no table header on stdout, the count on stderr.
    assert (listed.stdout, listed.stderr) == ("", "0 dead letter(s)\n")


def test_sign_needs_only_its_own_sources_secret(config: Path) -> None:
    body = config.parent / "body.json"
    body.write_text('{"n": 1}')
    only_gh = {**without_secrets(), "GW_GITHUB_SECRET": GITHUB_SECRET}
    signed = bare("sign", "-c", str(config), "--source", "gh", str(body), env=only_gh)
    assert signed.returncode == 0, signed.stderr
    assert "X-Hub-Signature-256: sha256=" in signed.stdout
    refused = bare("sign", "-c", str(config), "--source", "gh", str(body), env=without_secrets())
    assert refused.returncode == 2
    assert one_line(refused) == (
        "hookstream: environment variable GW_GITHUB_SECRET is not set: it holds the secret of "
        f"source 'gh' (signature.secret_env in {config})"
    )
    assert GITHUB_SECRET not in signed.stdout + signed.stderr + refused.stderr
