"""deploy/monitoring: the Grafana dashboard and the Prometheus alert rules, checked offline.

The rules pass ``promtool check rules`` and their unit tests (``promtool test rules``, Debian's
prometheus package; .ci/run installs it, and without it these tests fail rather than skip).
Every expression of the dashboard is valid PromQL (promtool checks it as a recording rule) and,
like every rule, names only metrics hookstream exports: the names come from the registry after
importing every module (the metrics reference page's own list), so renaming a metric in the
code without the dashboard or the rules fails here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "hookstream-dashboard.json"
ALERTS = MONITORING / "hookstream-alerts.yml"
ALERT_TESTS = MONITORING / "hookstream-alerts.test.yml"
HOOK = ROOT / "docs" / "hooks" / "reference_pages.py"
METRIC = re.compile(r"\bhookstream_[a-z0-9_]+")
# What Grafana substitutes before sending a query, with values Prometheus accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
TEMPLATE_VARIABLE = re.compile(r"\$(source|flow|provider)\b")


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package "
            "(apt-get install prometheus; .ci/run does)"
        )
    return subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every series name hookstream exposes (``_total``; a histogram's ``_bucket``, ``_sum``,
    ``_count``), from the metrics reference page's generator."""
    spec = importlib.util.spec_from_file_location("reference_pages", HOOK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    names: set[str] = set()
    for metric in module.metrics():
        names.add(metric.name)
        if metric.type == "histogram":
            names.update(f"{metric.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def dashboard_panels() -> list[dict[str, Any]]:
    document = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in document["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return panels


def dashboard_exprs() -> dict[str, str]:
    """Every query of the dashboard by ``<panel title>/<refId>``."""
    return {
        f"{panel['title']}/{target['refId']}": target["expr"]
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    }


def as_prometheus(expr: str) -> str:
    """``expr`` as Grafana sends it: its interval variables and ``$flow``-style selectors
    replaced by values."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return TEMPLATE_VARIABLE.sub(".*", expr)


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_alert_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", ALERTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_the_alert_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", ALERT_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert len(tested) >= 2, tested


def test_every_alert_waits_and_says_what_to_do(exported: set[str]) -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= {
        "HookstreamConsumerLagGrowing",
        "HookstreamDeadLetters",
        "HookstreamAIBreakerOpen",
        "HookstreamFlowPaused",
        "HookstreamSinkPaused",
        "HookstreamNoEvents",
    }
    for rule in alert_rules():
        assert rule.get("for"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        used = set(METRIC.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= exported, (rule["alert"], used - exported)


def test_the_dashboard_names_only_exported_metrics(exported: set[str]) -> None:
    exprs = dashboard_exprs()
    panels = [panel for panel in dashboard_panels() if panel["type"] != "row"]
    assert all(panel.get("targets") for panel in panels), "a panel without a query"
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    used: set[str] = set()
    for where, expr in exprs.items():
        names = set(METRIC.findall(expr))
        assert names, f"{where}: names no hookstream metric: {expr}"
        assert names <= exported, f"{where}: not exported: {sorted(names - exported)}"
        used |= names
    # The panels issue 13 asks for: gateway, worker, lag, AI, sinks, DLQ, end-to-end latency.
    assert used >= {
        "hookstream_gateway_requests_total",
        "hookstream_gateway_produce_seconds_bucket",
        "hookstream_runner_events_total",
        "hookstream_runner_in_flight",
        "hookstream_consumer_lag_records",
        "hookstream_ai_calls_total",
        "hookstream_ai_tokens_total",
        "hookstream_ai_cost_usd_total",
        "hookstream_ai_breaker_state",
        "hookstream_ai_flow_paused",
        "hookstream_sink_deliveries_total",
        "hookstream_sink_delivery_seconds_bucket",
        "hookstream_sink_paused",
        "hookstream_dead_letters_total",
        "hookstream_end_to_end_seconds_bucket",
    }
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    for variable in variables:
        query = variable.get("definition", "")
        assert set(METRIC.findall(query)) <= exported, variable["name"]


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule): a typo in a query fails here, not
    in front of an operator."""
    rules = [
        {"record": f"hookstream:dashboard:{index}", "expr": as_prometheus(expr)}
        for index, expr in enumerate(dashboard_exprs().values())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
