"""examples/flows-sinks.yaml (HTTP, Slack and PostgreSQL sinks) passes ``hookstream config
check``, and the check names the sinks' environment variables when they are missing."""

from __future__ import annotations

import os
import subprocess
import sys

from schemas.config_loader import load_config
from schemas.config_sinks import HttpSinkConfig, PostgresSinkConfig, SlackSinkConfig
from tests.support.stack import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "flows-sinks.yaml"
ENV = {
    "HELPDESK_WEBHOOK_SECRET": "example-helpdesk-secret",
    "AI_API_KEY": "example-ai-key",
    "SLACK_WEBHOOK_URL": "http://127.0.0.1:8093/slack/support",
    "WAREHOUSE_DSN": "postgresql://hookstream@127.0.0.1:5433/hookstream",
}


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ENV}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "config", "check", str(EXAMPLE)],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_sinks_example_passes_config_check() -> None:
    done = _check(ENV)
    assert done.returncode == 0, done.stderr
    assert "flows-sinks.yaml: ok (1 sources, 1 providers, 1 flows)" in done.stdout + done.stderr


def test_the_sinks_example_has_every_kind_of_sink() -> None:
    config = load_config(EXAMPLE, env=ENV)
    crm, slack, warehouse = config.flow("feedback-triage").sinks
    assert isinstance(crm, HttpSinkConfig)
    assert crm.deliver_replays
    assert isinstance(slack, SlackSinkConfig)
    assert not slack.deliver_replays
    assert slack.webhook_url is not None
    assert isinstance(warehouse, PostgresSinkConfig)
    assert warehouse.key == ("customer_id",)
    assert warehouse.dsn is not None
    assert warehouse.dsn.get_secret_value() == ENV["WAREHOUSE_DSN"]
    assert not config.worker.allow_private_networks  # only the simulators are allowed, one by one
    assert all(sink.allow_private for sink in (crm, slack))


def test_config_check_names_the_missing_sink_variables() -> None:
    env = {k: v for k, v in ENV.items() if k not in ("SLACK_WEBHOOK_URL", "WAREHOUSE_DSN")}
    done = _check(env)
    assert done.returncode == 2
    assert "sinks[1].webhook_url_env: environment variable SLACK_WEBHOOK_URL is not set" in (
        done.stderr
    )
    assert "sinks[2].dsn_env: environment variable WAREHOUSE_DSN is not set" in done.stderr
    assert "flows-sinks.yaml:" in done.stderr
