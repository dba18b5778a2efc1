"""The `hookstream` command as a user runs it: bad config refused at start, schemas exported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.support.stack import EXAMPLE_CONFIG, REPO_ROOT, SECRETS


def hookstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    text = EXAMPLE_CONFIG.read_text()
    text = text.replace("max_concurrency: 16", "max_concurrency: 0", 1)
    text = text.replace("      provider: default", "      provider: gpt", 1)
    path = tmp_path / "flows.yaml"
    path.write_text(text)
    return path


def expected_lines(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    provider_line = lines.index("      provider: gpt") + 1
    concurrency_line = lines.index("      max_concurrency: 0") + 1
    return [
        f"{path}:{provider_line}: flows[0].ai.provider: "
        "unknown provider 'gpt'; expected one of: default",
        f"{path}:{concurrency_line}: flows[0].ai.max_concurrency: must be at least 1, got 0",
    ]


def test_config_check_accepts_the_example() -> None:
    result = hookstream("config", "check", str(EXAMPLE_CONFIG), env=SECRETS)
    assert result.returncode == 0, result.stderr
    assert "ok (2 sources, 1 providers, 2 flows)" in result.stdout


def test_config_check_lists_every_problem_with_file_line_and_field(bad_config: Path) -> None:
    result = hookstream("config", "check", str(bad_config), env=SECRETS)
    assert result.returncode == 2
    for line in expected_lines(bad_config):
        assert line in result.stderr


@pytest.mark.parametrize("command", ["gateway", "worker", "sinks"])
def test_every_service_refuses_to_start_on_a_bad_file(
    command: str, bad_config: Path, kafka_bootstrap: str
) -> None:
    result = hookstream(
        command, "-c", str(bad_config), env={**SECRETS, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    )
    assert result.returncode == 2
    for line in expected_lines(bad_config):
        assert line in result.stderr


def test_missing_secret_is_named_and_its_value_never_printed(kafka_bootstrap: str) -> None:
    env = {**SECRETS, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "AI_API_KEY": ""}
    result = hookstream("gateway", "-c", str(EXAMPLE_CONFIG), env=env)
    assert result.returncode == 2
    assert "providers[0].api_key_env: environment variable AI_API_KEY is not set" in result.stderr
    assert SECRETS["HELPDESK_WEBHOOK_SECRET"] not in result.stderr + result.stdout


def test_schemas_export_writes_one_schema_per_topic(tmp_path: Path) -> None:
    result = hookstream("schemas", "export", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [
        "config.schema.json",
        "dlq.schema.json",
        "enriched.schema.json",
        "events.schema.json",
        "receipts.schema.json",
        "results.schema.json",
    ]
    events = orjson.loads((tmp_path / "out" / "events.schema.json").read_bytes())
    # What the CloudEvents spec requires; the rest is filled in from the record (issue 17).
    assert set(events["required"]) == {"id", "source", "type"}
    assert {"time", "data", "partitionkey", "traceid"} <= set(events["properties"])
    assert "default" not in events["properties"]["partitionkey"]
    assert events["properties"]["specversion"]["const"] == "1.0"
    results = orjson.loads((tmp_path / "out" / "results.schema.json").read_bytes())
    assert {"flow", "model", "output", "usage", "latency_ms", "attempts"} <= set(
        results["properties"]
    )
