#!/usr/bin/env python3
"""`make compose-check`: docker-compose.yml checked without a container engine.

1. scripts/compose-check (Go, compose-go: the loader inside `docker compose`) loads the file as
   `docker compose config` would: interpolation with the file's defaults, the Compose
   Specification's JSON Schema, references between services and volumes. It prints the
   resolved project, which the checks below read.
2. Every command a hookstream service runs is accepted by the real `hookstream` parser (the
   simulators' options by the simulators' parsers, the demo's by scripts/demo.py's), and
   `hookstream <command> --help` runs for each command used.
3. What the services say to each other matches: the flows file each one mounts, loaded with that
   service's environment (secrets required), points at the broker's advertised listener, at the
   simulators' service names and ports; the gateway listens on 0.0.0.0 on the port it publishes;
   every long-running service has a healthcheck asking the port and path its process serves;
   the demo posts to the gateway and follows the CRM simulator with the gateway's secrets.

Exit status 0 when all holds, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "scripts" / "compose-check"
IMAGE = "hookstream:dev"
# Where the Dockerfile puts the repository's files (COPY examples/ and scripts/demo.py to /app).
IMAGE_ROOT = PurePosixPath("/app")
URL = re.compile(r"^https?://(?P<host>[^/:]+):(?P<port>\d+)(?P<path>/.*)?$")
# The path each kind of hookstream process serves for a healthcheck.
HEALTH_PATHS = {"gateway": ("/healthz", "/readyz"), "dev": ("/healthz",)}
# worker and sinks answer their probes on the metrics port (--metrics-port).
PROBE_PATHS = ("/healthz", "/readyz")

sys.path.insert(0, str(REPO))


def load_project(files: list[Path], env: list[str]) -> dict[str, Any]:
    """The resolved project, as compose-go (docker compose's loader) makes it."""
    go = shutil.which("go")
    if go is None:
        raise SystemExit("compose-check: `go` not found: the validator is compose-go (Go)")
    # Built once into the state dir (go's build cache makes later builds a no-op); `go run`
    # would add its own "exit status 1" line to every refusal.
    binary = REPO / ".hookstream" / "bin" / "compose-check"
    built = subprocess.run(  # noqa: S603
        [go, "build", "-C", str(TOOL), "-o", str(binary), "."],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        sys.stderr.write(built.stderr)
        raise SystemExit(f"compose-check: building {TOOL} failed")
    args = [str(binary)]
    for item in env:
        args += ["-e", item]
    args += [str(f.resolve()) for f in files]
    done = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(1)
    project: dict[str, Any] = json.loads(done.stdout)
    return project


class Checker:
    def __init__(self, project: Mapping[str, Any]) -> None:
        self.services: Mapping[str, Any] = project["services"]
        self.problems: list[str] = []
        self.configs: dict[str, Any] = {}

    def problem(self, service: str, text: str) -> None:
        self.problems.append(f"services.{service}: {text}")

    # -- helpers ---------------------------------------------------------------------------

    def hookstream_services(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        for name, service in sorted(self.services.items()):
            if service.get("image") == IMAGE:
                yield name, service

    def argv(self, service: Mapping[str, Any]) -> list[str]:
        """The process's argv: the image's ENTRYPOINT is `hookstream`."""
        entrypoint = service.get("entrypoint") or ["hookstream"]
        return [*entrypoint, *(service.get("command") or [])]

    def host_path(self, name: str, service: Mapping[str, Any], path: str) -> Path | None:
        """The repository file behind a container path: a bind mount, else the image's copy."""
        target = PurePosixPath(path)
        for volume in service.get("volumes") or []:
            mount = PurePosixPath(volume["target"])
            if volume.get("type") == "bind" and (target == mount or mount in target.parents):
                return Path(volume["source"]) / target.relative_to(mount)
        if IMAGE_ROOT in target.parents:
            return REPO / target.relative_to(IMAGE_ROOT)
        self.problem(name, f"{path} is neither mounted nor in the image")
        return None

    @staticmethod
    def option(argv: list[str], flag: str) -> str | None:
        for index, word in enumerate(argv):
            if word == flag and index + 1 < len(argv):
                return argv[index + 1]
            if word.startswith(flag + "="):
                return word.split("=", 1)[1]
        return None

    def serves(self, name: str) -> int | None:
        """The port a hookstream service listens on (its HTTP server), or None."""
        service = self.services.get(name)
        if service is None or service.get("image") != IMAGE:
            return None
        argv = self.argv(service)
        if argv[1:2] == ["dev"]:
            port = self.option(argv, "--port")
            return int(port) if port else None
        if argv[1:2] == ["gateway"]:
            config = self.config_of(name, service)
            return config.gateway.port if config is not None else None
        return None

    def expect_url(self, name: str, what: str, url: str) -> None:
        """``url`` names a service of this project and the port that service listens on."""
        match = URL.match(url)
        if match is None:
            self.problem(name, f"{what} {url!r}: expected http://<service>:<port>/...")
            return
        host, port = match["host"], int(match["port"])
        if host not in self.services:
            self.problem(name, f"{what} {url}: no service named {host!r}")
            return
        listening = self.serves(host)
        if listening is not None and listening != port:
            self.problem(name, f"{what} {url}: {host} listens on {listening}, not {port}")

    def config_of(self, name: str, service: Mapping[str, Any]) -> Any:
        """The flows file of ``--config``, loaded with the service's environment (once)."""
        if name not in self.configs:
            self.configs[name] = self._load_config(name, service)
        return self.configs[name]

    def _load_config(self, name: str, service: Mapping[str, Any]) -> Any:
        from schemas.config_loader import load_config
        from schemas.errors import ConfigError

        path = self.option(self.argv(service), "--config")
        if path is None:
            return None
        host_file = self.host_path(name, service, path)
        if host_file is None:
            return None
        env = {k: str(v) for k, v in (service.get("environment") or {}).items() if v is not None}
        try:
            return load_config(host_file, env=env, require_secrets=True)
        except ConfigError as exc:
            for line in exc.problems:
                self.problem(name, f"{path} ({host_file}) with this service's environment: {line}")
            return None

    # -- the checks ------------------------------------------------------------------------

    def check_commands(self) -> set[tuple[str, ...]]:
        """Each command parses; returns the `hookstream` commands used (for --help runs)."""
        from streams.cli.main import build_parser
        from streams.dev import ai_sim, crm_sim, slack_sim

        simulators = {
            "ai-sim": ai_sim.build_parser,
            "crm-sim": crm_sim.build_parser,
            "slack-sim": slack_sim.build_parser,
        }
        used: set[tuple[str, ...]] = set()
        for name, service in self.hookstream_services():
            argv = self.argv(service)
            if argv[0] == "hookstream":
                ok = parses(build_parser(), argv[1:])
                if ok is not True:
                    self.problem(name, f"`{' '.join(argv)}` is refused by the CLI: {ok}")
                    continue
                words = argv[1:3] if argv[1] == "dev" else argv[1:2]
                used.add(tuple(words))
                if argv[1] == "dev":
                    ok = parses(simulators[argv[2]](), argv[3:])
                    if ok is not True:
                        self.problem(name, f"`{' '.join(argv)}`: {ok}")
            elif argv[0] == "python" and len(argv) > 1 and argv[1].endswith("/demo.py"):
                script = self.host_path(name, service, argv[1])
                if script is None or not script.is_file():
                    self.problem(name, f"{argv[1]} is not a file of the image")
                    continue
                ok = parses(load_module(script).build_parser(), argv[2:])
                if ok is not True:
                    self.problem(name, f"`{' '.join(argv)}` is refused: {ok}")
            else:
                self.problem(name, f"unexpected command {argv!r}")
        return used

    def check_help(self, used: set[tuple[str, ...]]) -> None:
        for words in sorted(used):
            done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
                [sys.executable, "-m", "streams.cli.main", *words, "--help"],
                capture_output=True,
                text=True,
                cwd=REPO,
                check=False,
            )
            if done.returncode != 0 or "usage:" not in done.stdout:
                self.problems.append(f"`hookstream {' '.join(words)} --help` failed: {done.stderr}")

    def check_configs(self) -> None:
        for name, service in self.hookstream_services():
            config = self.config_of(name, service)
            if config is None:
                continue
            for server in config.kafka.bootstrap_servers.split(","):
                self.check_broker(name, server.strip())
            for provider in config.providers:
                self.expect_url(name, f"provider {provider.name} base_url", provider.base_url)
            for flow in config.flows:
                for step in flow.enrich:
                    if step.url is not None:
                        self.expect_url(name, f"flow {flow.name} enrich {step.name}", step.url)
                for sink in flow.sinks:
                    url = getattr(sink, "url", None)
                    if url is not None:
                        self.expect_url(name, f"flow {flow.name} sink {sink.name}", url)
            if self.argv(service)[1:2] == ["gateway"]:
                self.check_gateway(name, service, config)

    def check_broker(self, name: str, server: str) -> None:
        host, _, port = server.rpartition(":")
        broker = self.services.get(host)
        if broker is None:
            self.problem(name, f"kafka.bootstrap_servers {server}: no service named {host!r}")
            return
        env = broker.get("environment") or {}
        advertised = str(env.get("KAFKA_ADVERTISED_LISTENERS", ""))
        names = [a.split("://", 1)[0] for a in advertised.split(",") if f"://{server}" in a]
        listeners = str(env.get("KAFKA_LISTENERS", ""))
        if not names or not any(f"{n}://:{port}" in listeners for n in names):
            self.problem(
                name,
                f"kafka.bootstrap_servers {server}: not a listener {host} advertises "
                f"(KAFKA_LISTENERS={listeners}, KAFKA_ADVERTISED_LISTENERS={advertised})",
            )

    def check_gateway(self, name: str, service: Mapping[str, Any], config: Any) -> None:
        if config.gateway.host not in ("0.0.0.0", "::"):  # noqa: S104 - a container's server
            self.problem(name, f"gateway.host is {config.gateway.host}: unreachable from outside")
        targets = [int(p["target"]) for p in service.get("ports") or []]
        if config.gateway.port not in targets:
            self.problem(
                name, f"gateway.port {config.gateway.port} is not a published port ({targets})"
            )
        secrets = {
            source.signature.secret_env
            for source in config.sources
            if source.signature.secret_env is not None
        }
        gateway_env = service.get("environment") or {}
        for other, other_service in self.hookstream_services():
            argv = self.argv(other_service)
            if not argv[1:2] or not argv[1].endswith("demo.py"):
                continue
            other_env = other_service.get("environment") or {}
            for secret in sorted(secrets):
                if other_env.get(secret) != gateway_env.get(secret):
                    self.problem(other, f"{secret} differs from the gateway's: it would be refused")
            for flag in ("--gateway-url", "--crm-url"):
                url = self.option(argv, flag)
                if url is None:
                    self.problem(other, f"no {flag}")
                else:
                    self.expect_url(other, flag, url)

    def check_api_keys(self) -> None:
        """A simulator that requires a key gets the one the worker sends."""
        worker_keys = {
            str(s["environment"].get("AI_API_KEY"))
            for _, s in self.hookstream_services()
            if self.argv(s)[1:2] == ["worker"]
        }
        for name, service in self.hookstream_services():
            var = self.option(self.argv(service), "--api-key-env")
            if var is None:
                continue
            value = (service.get("environment") or {}).get(var)
            if not value:
                self.problem(name, f"--api-key-env {var}: {var} is not in its environment")
            elif worker_keys and {str(value)} != worker_keys:
                self.problem(name, f"{var} differs from the worker's: the AI calls would get 401")

    def check_health(self) -> None:
        for name, service in sorted(self.services.items()):
            if service.get("restart") == "no":
                continue  # one-shot
            check = service.get("healthcheck")
            if not check or not check.get("test") or check.get("disable"):
                self.problem(name, "no healthcheck")
                continue
            if service.get("image") != IMAGE:
                continue
            argv = self.argv(service)
            urls = [word for word in check["test"] if URL.match(word)]
            if len(urls) != 1:
                self.problem(name, f"healthcheck {check['test']}: expected one http URL")
                continue
            match = URL.match(urls[0])
            if match is None:  # pragma: no cover - filtered above
                continue
            port, path = int(match["port"]), match["path"] or "/"
            if match["host"] not in ("127.0.0.1", "localhost"):
                self.problem(name, f"healthcheck {urls[0]}: should ask the container itself")
            metrics = self.option(argv, "--metrics-port")
            if argv[1] in ("worker", "sinks"):
                if metrics is None:
                    self.problem(name, "no --metrics-port for its healthcheck to ask")
                elif port != int(metrics) or path not in PROBE_PATHS:
                    self.problem(
                        name, f"healthcheck {urls[0]}: serves {', '.join(PROBE_PATHS)} on {metrics}"
                    )
            else:
                served = self.serves(name)
                paths = HEALTH_PATHS.get(argv[1], ())
                if served is not None and (port != served or path not in paths):
                    self.problem(
                        name, f"healthcheck {urls[0]}: serves {', '.join(paths)} on {served}"
                    )
        for name, service in sorted(self.services.items()):
            for dependency, how in (service.get("depends_on") or {}).items():
                if how.get("condition") == "service_healthy" and not self.services[dependency].get(
                    "healthcheck"
                ):
                    self.problem(
                        name, f"waits for {dependency} to be healthy: it has no healthcheck"
                    )


def parses(parser: argparse.ArgumentParser, argv: list[str]) -> bool | str:
    """True when ``parser`` accepts ``argv``, else argparse's message."""
    messages: list[str] = []

    def error(message: str) -> Any:
        messages.append(message)
        raise SystemExit(2)

    parser.error = error  # type: ignore[method-assign]
    for action in parser._actions:  # the sub-commands' parsers too
        for sub in getattr(action, "choices", None) or {}:
            choice = action.choices[sub]  # type: ignore[index]
            if isinstance(choice, argparse.ArgumentParser):
                choice.error = error  # type: ignore[method-assign]
    try:
        parser.parse_args(argv)
    except SystemExit:
        return messages[0] if messages else "refused"
    return True


def load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"compose-check: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "files", nargs="*", type=Path, default=[REPO / "docker-compose.yml"], help="compose files"
    )
    parser.add_argument(
        "-e",
        dest="env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable for the interpolation (default: none, the file's defaults)",
    )
    args = parser.parse_args(argv)
    project = load_project(args.files, args.env)
    shown = ", ".join(str(f) for f in args.files)
    print(f"compose-check: {shown}: valid (compose-go, the Compose Specification's JSON Schema)")
    checker = Checker(project)
    used = checker.check_commands()
    checker.check_help(used)
    checker.check_configs()
    checker.check_api_keys()
    checker.check_health()
    for problem in checker.problems:
        print(f"compose-check: {problem}", file=sys.stderr)
    if checker.problems:
        return 1
    commands = ", ".join(" ".join(words) for words in sorted(used))
    print(
        f"compose-check: {len(checker.services)} services; commands accepted by the CLI "
        f"({commands}, and the demo's); flows file, listeners, ports, secrets and healthchecks "
        "agree"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
