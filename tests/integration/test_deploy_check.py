"""`make deploy-check` (scripts/deploy_check.py): the chart renders, validates, and each check
refuses the mistake it is there for.

Helm is built from source on first use (about 4 to 7 minutes cold on two CPUs, cached after by
its go.sum's hash); the broker is not involved.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.support.stack import REPO_ROOT

Manifests = list[dict[str, Any]]
# The first test to run may build Helm: up to ~7 minutes cold, past the suite's 300 s default.
pytestmark = pytest.mark.timeout(900)


def deploy_check() -> Any:
    path = REPO_ROOT / "scripts" / "deploy_check.py"
    spec = importlib.util.spec_from_file_location("deploy_check", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered() -> tuple[Any, list[str], Manifests]:
    module = deploy_check()
    binary = module.helm_binary()
    values = str(module.CHART / "ci" / "created-secret-values.yaml")
    text = module.helm(binary, "template", "hookstream", str(module.CHART), "-f", values)
    return module, module.kube_versions(), [m for m in yaml.safe_load_all(text) if m]


def problems_after(
    rendered: tuple[Any, list[str], Manifests], change: Callable[[Manifests], None]
) -> list[str]:
    module, versions, manifests = rendered
    changed = copy.deepcopy(manifests)
    change(changed)
    checker = module.Checker("test", changed)
    checker.validate_schemas(versions)
    checker.check_deployments()
    checker.check_disruption_budgets()
    problems: list[str] = checker.problems
    return problems


def deployment(manifests: Manifests, role: str) -> dict[str, Any]:
    return next(
        m
        for m in manifests
        if m["kind"] == "Deployment" and m["metadata"]["name"] == f"hookstream-{role}"
    )


def container(manifests: Manifests, role: str) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(manifests, role)["spec"]["template"]["spec"]
    first: dict[str, Any] = spec["containers"][0]
    return first


def test_make_deploy_check_passes() -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "deploy-check"],
        cwd=REPO_ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every manifest valid (strict) for Kubernetes 1.25.0 and" in done.stdout
    assert "ci/created-secret-values.yaml: 9 manifests" in done.stdout


def test_the_rendered_chart_as_is_has_no_problem(
    rendered: tuple[Any, list[str], Manifests],
) -> None:
    assert problems_after(rendered, lambda manifests: None) == []
    kinds = sorted(m["kind"] for m in rendered[2])
    assert kinds.count("Deployment") == 4  # gateway, worker, sinks, batcher
    batcher = deployment(rendered[2], "batcher")["spec"]
    assert (batcher["replicas"], batcher["strategy"]["type"]) == (1, "Recreate")
    assert kinds.count("PodDisruptionBudget") == 2  # the sinks' is off in the ci values


def _liveness_on_metrics(manifests: Manifests) -> None:
    container(manifests, "worker")["livenessProbe"]["httpGet"]["path"] = "/metrics"


def _misspelt_field(manifests: Manifests) -> None:
    container(manifests, "sinks")["resourcez"] = {}


def _secret_key_missing(manifests: Manifests) -> None:
    secret = next(m for m in manifests if m["kind"] == "Secret")
    del secret["stringData"]["ai-api-key"]


def _annotation_port(manifests: Manifests) -> None:
    deployment(manifests, "gateway")["spec"]["template"]["metadata"]["annotations"][
        "prometheus.io/port"
    ] = "9999"


def _unknown_option(manifests: Manifests) -> None:
    container(manifests, "worker")["args"].append("--bogus")


def _secret_not_mounted(manifests: Manifests) -> None:
    gateway = container(manifests, "gateway")
    gateway["volumeMounts"] = [v for v in gateway["volumeMounts"] if v["name"] != "secrets"]


def _budget_selects_all(manifests: Manifests) -> None:
    budget = next(m for m in manifests if m["kind"] == "PodDisruptionBudget")
    del budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]


def _bad_config(manifests: Manifests) -> None:
    config = next(m for m in manifests if m["kind"] == "ConfigMap")["data"]
    config["flows.yaml"] = config["flows.yaml"].replace("partitions: 8", "partitions: -1")


def _metrics_on_localhost(manifests: Manifests) -> None:
    args = container(manifests, "sinks")["args"]
    args[args.index("--metrics-host") + 1] = "127.0.0.1"


def _batcher_rolling(manifests: Manifests) -> None:
    del deployment(manifests, "batcher")["spec"]["strategy"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_liveness_on_metrics, "livenessProbe should ask /healthz on 9500"),
        (_misspelt_field, "Additional properties are not allowed ('resourcez' was unexpected)"),
        (_secret_key_missing, "Secret hookstream-secrets has no ai-api-key"),
        (_annotation_port, "annotation prometheus.io/port is '9999', not '8081'"),
        (_unknown_option, "unrecognized arguments: --bogus"),
        (_secret_not_mounted, "/var/run/secrets/hookstream/ai-api-key: no Secret is mounted"),
        (_budget_selects_all, "expected exactly one Deployment's pods"),
        (_bad_config, "the ConfigMap's flows.yaml:9: kafka.partitions: must be at least 1"),
        (_metrics_on_localhost, "--metrics-host must be 0.0.0.0"),
        (_batcher_rolling, "the batcher needs replicas 1 and strategy Recreate"),
    ],
)
def test_each_check_refuses_its_mistake(
    rendered: tuple[Any, list[str], Manifests],
    change: Callable[[Manifests], None],
    expected: str,
) -> None:
    problems = problems_after(rendered, change)
    assert any(expected in p for p in problems), problems
