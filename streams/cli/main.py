"""The ``hookstream`` command: gateway, worker, sinks, config check, schemas, simulators.

Every command that reads the config refuses to start on a bad file and prints each problem as
``file:line: field.path: reason`` (exit status 2).

Each command imports what it needs when it runs: pydantic and the config models with the
config, aiokafka with the commands that use Kafka. The short-lived ones (config check and the
operator commands of :mod:`streams.cli.ops`) do that inside :func:`~streams.cli.ops.startup`:
start-up is most of their time (bench/replay).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.errors import BrokerUnavailable, ConfigError
from streams.cli.ops import startup

if TYPE_CHECKING:
    from schemas.config import HookstreamConfig

CONFIG_ENV = "HOOKSTREAM_CONFIG"
LOG_LEVELS = ("crit", "error", "warn", "info", "debug")
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=os.environ.get(CONFIG_ENV, "hookstream.yaml"),
        help=f"flows file (default: ${CONFIG_ENV} or ./hookstream.yaml)",
    )


def _load(path: str, *, require_secrets: bool = True) -> HookstreamConfig:
    from schemas.config_loader import load_config

    try:
        return load_config(path, require_secrets=require_secrets)
    except ConfigError as exc:
        print(f"hookstream: the config file has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _setup_logging(level: str) -> None:
    import logging

    numeric = {"crit": logging.CRITICAL, "warn": logging.WARNING}.get(level, level.upper())
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_config_check(args: argparse.Namespace) -> int:
    with startup():
        config = _load(args.file, require_secrets=not args.no_env)
    print(
        f"{args.file}: ok ({len(config.sources)} sources, {len(config.providers)} providers, "
        f"{len(config.flows)} flows)"
    )
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    from schemas.export import export_schemas

    for path in export_schemas(Path(args.directory)):
        print(path)
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    import asyncio

    from streams.gateway.server import serve

    config = _load(args.config)
    _setup_logging(args.loglevel)
    loop_factory = None
    try:
        # uvloop: the gateway's hot path is socket I/O; it serves more requests per core.
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - a declared dependency; asyncio works too
        pass
    try:
        with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as r:
            r.run(serve(config, port=args.port))
    except BrokerUnavailable as exc:
        print(f"hookstream gateway: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0


def _wait_for_topics(config: HookstreamConfig, wait_s: float) -> None:
    import asyncio

    from streams.kafka.admin import ensure_topics

    deadline = time.monotonic() + wait_s
    while True:
        try:
            asyncio.run(ensure_topics(config.kafka))
            return
        except BrokerUnavailable as exc:
            if time.monotonic() > deadline:
                print(f"hookstream: {exc}", file=sys.stderr)
                raise SystemExit(EXIT_UNAVAILABLE) from None
            time.sleep(1.0)


def _run_faust(args: argparse.Namespace, role: str) -> int:
    import faust

    from agents.app import create_app

    config = _load(args.config)
    _wait_for_topics(config, args.wait_for_broker_s)
    metrics_port = getattr(args, "metrics_port", None)
    app = create_app(
        config,
        "worker" if role == "worker" else "sinks",
        metrics_port=metrics_port,
        metrics_host=getattr(args, "metrics_host", "127.0.0.1"),
    )
    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True)
    worker.execute_from_commandline()  # exits the process when the worker stops
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    return _run_faust(args, "worker")


def cmd_sinks(args: argparse.Namespace) -> int:
    return _run_faust(args, "sinks")


def cmd_sign(args: argparse.Namespace) -> int:
    """Print the headers a sender would add, so curl users can post test webhooks."""
    from streams.gateway.signatures import sign_headers

    config = _load(args.config)
    source = config.source(args.source)
    if source is None:
        print(f"hookstream: no source named {args.source!r}", file=sys.stderr)
        return EXIT_CONFIG
    body = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    for name, value in sign_headers(source.signature, body).items():
        print(f"{name}: {value}")
    return 0


def _faust_args(parser: argparse.ArgumentParser) -> None:
    _config_arg(parser)
    parser.add_argument("--loglevel", "-l", choices=LOG_LEVELS, default="info")
    parser.add_argument(
        "--wait-for-broker-s",
        type=float,
        default=60.0,
        help="how long to wait for Kafka at start (default 60)",
    )
    # Both roles: a scrape target, and what a container healthcheck asks (docker-compose.yml).
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ["HOOKSTREAM_METRICS_PORT"])
        if os.environ.get("HOOKSTREAM_METRICS_PORT")
        else None,
        help="serve Prometheus /metrics on this port (default: $HOOKSTREAM_METRICS_PORT, else "
        "off; 9464 is customary)",
    )
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hookstream", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    gateway = commands.add_parser("gateway", help="run the webhook gateway")
    _config_arg(gateway)
    gateway.add_argument("--port", type=int, default=None, help="override gateway.port")
    gateway.add_argument("--loglevel", "-l", choices=LOG_LEVELS, default="info")
    gateway.set_defaults(func=cmd_gateway)

    worker = commands.add_parser("worker", help="run the enrich and AI agents (Faust worker)")
    _faust_args(worker)
    worker.set_defaults(func=cmd_worker)

    sinks = commands.add_parser("sinks", help="run the sink agents (own consumer group)")
    _faust_args(sinks)
    sinks.set_defaults(func=cmd_sinks)

    config = commands.add_parser("config", help="work with the config file")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.add_argument(
        "--no-env", action="store_true", help="do not require the secrets' environment variables"
    )
    check.set_defaults(func=cmd_config_check)

    schemas = commands.add_parser("schemas", help="JSON Schemas of the topics")
    schema_commands = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schema_commands.add_parser("export", help="write one JSON Schema per topic")
    export.add_argument("directory")
    export.set_defaults(func=cmd_schemas_export)

    sign = commands.add_parser("sign", help="print signature headers for a test webhook body")
    _config_arg(sign)
    sign.add_argument("--source", required=True)
    sign.add_argument("file", help="body file, or - for stdin")
    sign.set_defaults(func=cmd_sign)

    dev = commands.add_parser("dev", help="local simulators")
    dev.add_argument("simulator", choices=["ai-sim", "crm-sim", "slack-sim"])
    dev.add_argument("sim_args", nargs=argparse.REMAINDER)
    dev.set_defaults(func=cmd_dev)

    from streams.cli import ops as cli_ops  # dlq, replay, publish, tail

    cli_ops.add_commands(commands, lambda path: _load(path), _config_arg)
    return parser


def cmd_dev(args: argparse.Namespace) -> int:
    if args.simulator == "ai-sim":
        from streams.dev import ai_sim

        return ai_sim.main(args.sim_args)
    if args.simulator == "slack-sim":
        from streams.dev import slack_sim

        return slack_sim.main(args.sim_args)
    from streams.dev import crm_sim

    return crm_sim.main(args.sim_args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
