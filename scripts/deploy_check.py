#!/usr/bin/env python3
"""`make deploy-check`: the Helm chart in deploy/helm/hookstream rendered and validated offline.

1. Helm itself, built from source with Go (scripts/deploy-check pins helm.sh/helm/v4 and every
   dependency in go.mod/go.sum), cached by that go.sum's hash in ~/.cache/hookstream (or
   $HOOKSTREAM_TOOLS_CACHE): a later run, a fresh clone on the same machine included, reuses it.
2. `helm lint --strict` and `helm template` with the default values and with each file of the
   chart's ci/ folder (the convention chart-testing uses).
3. Every rendered manifest against the Kubernetes OpenAPI schemas kubernetes-validate ships, in
   strict mode (an unknown or misspelt field fails), for the oldest Kubernetes the chart's
   kubeVersion admits that the package knows and for the newest.
4. What hookstream needs of them: each container's command is accepted by the `hookstream`
   parser; the ConfigMap's config file loads with that container's environment, its secrets'
   *_file paths lie in the mounted Secret (and, when the chart creates the Secret, name its
   keys); the gateway listens on all addresses on the port the container declares; every probe
   and the Prometheus annotations ask the port and path the process serves; each
   PodDisruptionBudget selects one Deployment's pods.

Nothing here talks to a cluster: what a cluster would still refuse (admission policies, quotas,
an image that does not exist) is not checked. Exit status 0 when all holds, 1 with one line per
problem otherwise.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "scripts" / "deploy-check"
CHART = REPO / "deploy" / "helm" / "hookstream"
# The oldest Kubernetes the chart's kubeVersion (>=1.25) admits that kubernetes-validate still
# knows, and its newest.
KUBE_VERSIONS = ("oldest", "latest")
PROBE_PATHS = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/readyz"}

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def helm_binary() -> Path:
    """Helm built from scripts/deploy-check's pinned module, once per go.sum."""
    digest = hashlib.sha256((TOOL / "go.sum").read_bytes() + (TOOL / "go.mod").read_bytes())
    cache = Path(os.environ.get("HOOKSTREAM_TOOLS_CACHE", Path.home() / ".cache" / "hookstream"))
    binary = cache / f"helm-{digest.hexdigest()[:16]}"
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    # One build at a time: .ci/run starts one in the background while the tests run, and a
    # test that needs Helm then waits for it instead of compiling the same packages again.
    with (cache / f"{binary.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary
        return _build_helm(binary, cache)


def _build_helm(binary: Path, cache: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        raise SystemExit("deploy-check: `go` not found: Helm is built from source with Go")
    cache.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".partial")
    started = time.monotonic()
    print("deploy-check: building Helm from source (once; cached)", flush=True)
    built = subprocess.run(  # noqa: S603 - fixed arguments
        [go, "build", "-C", str(TOOL), "-o", str(partial), "helm.sh/helm/v4/cmd/helm"],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        sys.stderr.write(built.stderr)
        raise SystemExit(f"deploy-check: building Helm in {TOOL} failed")
    partial.replace(binary)
    print(f"deploy-check: Helm built in {time.monotonic() - started:.0f} s: {binary}")
    return binary


def helm(binary: Path, *args: str) -> str:
    done = subprocess.run(  # noqa: S603 - our own built binary, fixed arguments
        [str(binary), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"deploy-check: helm {' '.join(args)} failed")
    return done.stdout


def value_sets() -> list[tuple[str, list[str]]]:
    sets = [("default values", [])]
    for path in sorted((CHART / "ci").glob("*.yaml")):
        sets.append((str(path.relative_to(REPO)), ["-f", str(path)]))
    return sets


def kube_versions() -> list[str]:
    from kubernetes_validate.utils import all_versions, latest_version

    known = sorted(
        {v for v in all_versions() if tuple(map(int, v.split(".")[:2])) >= (1, 25)},
        key=lambda v: tuple(map(int, v.split("."))),
    )
    return [known[0], latest_version()]


class Checker:
    def __init__(self, where: str, manifests: list[dict[str, Any]]) -> None:
        self.where = where
        self.manifests = manifests
        self.problems: list[str] = []

    def problem(self, what: str, text: str) -> None:
        self.problems.append(f"{self.where}: {what}: {text}")

    def of_kind(self, kind: str) -> Iterator[dict[str, Any]]:
        return (m for m in self.manifests if m.get("kind") == kind)

    def validate_schemas(self, versions: list[str]) -> None:
        import kubernetes_validate

        for manifest in self.manifests:
            name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
            for version in versions:
                try:
                    kubernetes_validate.validate(manifest, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    path = ".".join(str(p) for p in exc.path)
                    self.problem(name, f"Kubernetes {version} schema: {path}: {exc.message}")
                except kubernetes_validate.SchemaNotFoundError as exc:
                    self.problem(name, f"Kubernetes {version}: no schema: {exc}")

    def config_text(self) -> str | None:
        maps = [m for m in self.of_kind("ConfigMap") if "flows.yaml" in (m.get("data") or {})]
        if len(maps) != 1:
            self.problem("ConfigMap", f"expected one holding flows.yaml, found {len(maps)}")
            return None
        text: str = maps[0]["data"]["flows.yaml"]
        return text

    def check_deployments(self) -> None:
        from compose_check import Checker as ComposeChecker
        from compose_check import parses

        from streams.cli.main import build_parser

        config_text = self.config_text()
        secrets = {m["metadata"]["name"]: m for m in self.of_kind("Secret")}
        roles: set[str] = set()
        for deployment in self.of_kind("Deployment"):
            name = f"Deployment/{deployment['metadata']['name']}"
            pod = deployment["spec"]["template"]
            commands = {str((c.get("args") or [""])[0]) for c in pod["spec"]["containers"]}
            strategy = (deployment["spec"].get("strategy") or {}).get("type")
            replicas = deployment["spec"].get("replicas")
            if "batcher" in commands and (replicas != 1 or strategy != "Recreate"):
                # A newer batcher fences the older: more than one would only take turns.
                self.problem(name, "the batcher needs replicas 1 and strategy Recreate")
            for container in pod["spec"]["containers"]:
                args = [str(a) for a in container.get("args") or []]
                ok = parses(build_parser(), args)
                if ok is not True:
                    self.problem(name, f"`hookstream {' '.join(args)}` is refused: {ok}")
                    continue
                role = args[0]
                roles.add(role)
                env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}
                ports = [p["containerPort"] for p in container.get("ports") or []]
                config = None
                if config_text is not None:
                    config = self.load(name, container, config_text, env, pod, secrets)
                if role == "gateway":
                    served = config.gateway.port if config is not None else None
                    if config is not None and config.gateway.host not in ("0.0.0.0", "::"):  # noqa: S104
                        self.problem(name, f"gateway.host {config.gateway.host}: unreachable")
                else:
                    metrics = ComposeChecker.option(args, "--metrics-port")
                    served = int(metrics) if metrics else None
                    if ComposeChecker.option(args, "--metrics-host") not in ("0.0.0.0", "::"):  # noqa: S104
                        self.problem(name, "--metrics-host must be 0.0.0.0: the kubelet probes it")
                if served is None:
                    self.problem(name, f"{role} serves no port for its probes")
                    continue
                if served not in ports:
                    self.problem(name, f"serves on {served}, declares ports {ports}")
                for probe, path in PROBE_PATHS.items():
                    get = (container.get(probe) or {}).get("httpGet") or {}
                    if (get.get("path"), get.get("port")) != (path, served):
                        self.problem(name, f"{probe} should ask {path} on {served}, asks {get}")
                notes = pod["metadata"].get("annotations") or {}
                expected = {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(served),
                    "prometheus.io/path": "/metrics",
                }
                for key, value in expected.items():
                    if notes.get(key) != value:
                        self.problem(name, f"annotation {key} is {notes.get(key)!r}, not {value!r}")
                if not (container.get("resources") or {}).get("requests"):
                    self.problem(name, "no resource requests")
        if roles - {"batcher"} != {"gateway", "worker", "sinks"}:
            self.problem("Deployments", f"expected gateway, worker and sinks, found {roles}")

    def load(
        self,
        name: str,
        container: Mapping[str, Any],
        text: str,
        env: dict[str, str],
        pod: Mapping[str, Any],
        secrets: Mapping[str, Any],
    ) -> Any:
        """The config as this container loads it; its *_file paths must be in a mounted
        Secret (read here from a stand-in folder with the Secret's keys)."""
        from schemas.config_loader import load_config
        from schemas.errors import ConfigError

        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts: dict[PurePosixPath, Mapping[str, Any]] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            if "secret" in volume:
                mounts[PurePosixPath(mount["mountPath"])] = volume["secret"]
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "flows.yaml").write_text(text, encoding="utf-8")
            files = set(secret_files(yaml.safe_load(text)))
            replaced = text
            for file in sorted(files):
                target = PurePosixPath(file)
                mount = next((m for m in mounts if m in target.parents), None)
                if mount is None:
                    self.problem(name, f"config names {file}: no Secret is mounted there")
                    continue
                secret_name = mounts[mount]["secretName"]
                key = str(target.relative_to(mount))
                created = secrets.get(secret_name)
                if created is not None and key not in (created.get("stringData") or {}):
                    self.problem(name, f"config names {file}: Secret {secret_name} has no {key}")
                stand_in = root / "secrets" / key
                stand_in.parent.mkdir(parents=True, exist_ok=True)
                stand_in.write_text("stand-in-secret-value\n", encoding="utf-8")
                replaced = replaced.replace(file, str(stand_in))
            (root / "flows.yaml").write_text(replaced, encoding="utf-8")
            try:
                return load_config(root / "flows.yaml", env=env, require_secrets=True)
            except ConfigError as exc:
                for line in exc.problems:
                    line = line.replace(str(root / "flows.yaml"), "flows.yaml")
                    self.problem(name, f"the ConfigMap's {line}")
                return None

    def check_disruption_budgets(self) -> None:
        pods = [
            (d["metadata"]["name"], d["spec"]["template"]["metadata"].get("labels") or {})
            for d in self.of_kind("Deployment")
        ]
        for budget in self.of_kind("PodDisruptionBudget"):
            wanted = budget["spec"]["selector"].get("matchLabels") or {}
            matched = [n for n, labels in pods if wanted.items() <= labels.items()]
            if len(matched) != 1:
                self.problem(
                    f"PodDisruptionBudget/{budget['metadata']['name']}",
                    f"selects {matched}: expected exactly one Deployment's pods",
                )


def secret_files(value: Any) -> Iterator[str]:
    """Every ``*_file`` path in a config file's data."""
    if isinstance(value, dict):
        for key, child in value.items():
            if isinstance(key, str) and key.endswith("_file") and isinstance(child, str):
                yield child
            else:
                yield from secret_files(child)
    elif isinstance(value, list):
        for item in value:
            yield from secret_files(item)


def main() -> int:
    binary = helm_binary()
    if sys.argv[1:] == ["--build-only"]:
        return 0
    versions = kube_versions()
    problems: list[str] = []
    counts: list[str] = []
    for where, args in value_sets():
        helm(binary, "lint", "--strict", str(CHART), *args)
        rendered = helm(binary, "template", "hookstream", str(CHART), *args)
        manifests = [m for m in yaml.safe_load_all(rendered) if m]
        checker = Checker(where, manifests)
        checker.validate_schemas(versions)
        checker.check_deployments()
        checker.check_disruption_budgets()
        problems += checker.problems
        kinds = sorted({m["kind"] for m in manifests})
        counts.append(f"{where}: {len(manifests)} manifests ({', '.join(kinds)})")
    for problem in problems:
        print(f"deploy-check: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"deploy-check: {CHART.relative_to(REPO)}: helm lint --strict and helm template pass; "
        f"every manifest valid (strict) for Kubernetes {' and '.join(versions)}; commands, "
        "config, secret files, probes, metrics annotations and disruption budgets agree"
    )
    for line in counts:
        print(f"deploy-check:   {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
