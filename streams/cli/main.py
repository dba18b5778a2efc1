"""The ``hookstream`` command: gateway, worker, sinks, config check, schemas, simulators.

Every command that reads the config takes it with ``-c/--config`` (default: ``$HOOKSTREAM_CONFIG``,
else ``./hookstream.yaml``), refuses to start on a bad file and prints each problem as
``file:line: field.path: reason`` (exit status 2). Any other expected failure is one line on
stderr that says what to do, with an exit status of its own (:mod:`streams.cli.exits`).

Each command imports what it needs when it runs: pydantic and the config models with the
config, aiokafka with the commands that use Kafka. The short-lived ones (config check and the
operator commands of :mod:`streams.cli.ops`) do that inside :func:`~streams.cli.ops.startup`:
start-up is most of their time (bench/replay).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.errors import BrokerUnavailable, ConfigError
from streams.cli.exits import (
    EPILOG,
    EXIT_BAD_INPUT,
    EXIT_CANNOT_LISTEN,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    fail,
)
from streams.cli.ops import non_negative_seconds, quiet_kafka_logs, startup, unreachable_hint
from streams.http.ports import env_default, is_listen_error, listen_hint, port_type
from streams.logs import LOG_FORMAT_ENV, LOG_FORMATS, configure, default_format, level_number
from streams.metrics import tracing

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from schemas.config import HookstreamConfig

CONFIG_ENV = "HOOKSTREAM_CONFIG"
METRICS_PORT_ENV = "HOOKSTREAM_METRICS_PORT"
LOG_LEVELS = ("crit", "error", "warn", "info", "debug")
SIMULATORS = ("ai-sim", "crm-sim", "slack-sim")
SERVICES = ("gateway", "worker", "sinks", "batcher")
EXIT_CONFIG = EXIT_BAD_INPUT  # the name main.py used before streams.cli.exits


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=os.environ.get(CONFIG_ENV, "hookstream.yaml"),
        help=f"flows file (default: ${CONFIG_ENV}, else ./hookstream.yaml)",
    )


def _loglevel_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loglevel", "-l", choices=LOG_LEVELS, default="info", help="log level (default info)"
    )


class _VersionAction(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked (start-up
    stays free of importlib.metadata)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=str(kwargs["help"])
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"hookstream {package_version()}")
        parser.exit()


def package_version() -> str:
    """The version of the installed ``hookstream`` distribution (pyproject's version)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hookstream")
    except PackageNotFoundError:
        return "(not installed: run pip install -e . in the repository)"


def _load(path: str, *, require_secrets: bool = True) -> HookstreamConfig:
    from schemas.config_loader import load_config

    try:
        return load_config(path, require_secrets=require_secrets)
    except ConfigError as exc:
        print(f"hookstream: the config file has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _load_without_secrets(path: str) -> HookstreamConfig:
    return _load(path, require_secrets=False)


def _log_format_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default_format(),
        help=f"log lines as text or one JSON object per line (default: ${LOG_FORMAT_ENV}, "
        "else text)",
    )


def _every_command(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parsers of every command that runs something (the leaves of the command tree)."""
    found = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found = True
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from _every_command(sub)
    if not found:
        yield parser


def _setup_logging(args: argparse.Namespace) -> None:
    """Logging for the command's process: JSON for every command (on stderr; the services'
    stdout too), text for the services as before; an operator command in text mode keeps
    logging's default (warnings and errors, message only)."""
    # A command added after build_parser's last step has no option: the environment decides.
    log_format = getattr(args, "log_format", None) or default_format()
    if log_format not in LOG_FORMATS:  # from the environment: argparse checks only flags
        message = f"${LOG_FORMAT_ENV}={log_format!r}: not a log format; use text or json"
        raise SystemExit(fail(message, EXIT_BAD_INPUT))
    role = args.simulator if args.command == "dev" and args.simulator else args.command
    loglevel = getattr(args, "loglevel", None)
    level = level_number(loglevel) if loglevel is not None else logging.WARNING
    if log_format == "json" or role in SERVICES:
        configure(log_format, level=level, role=role, capture_stdout=role in SERVICES)


def cmd_config_check(args: argparse.Namespace) -> int:
    path = args.file if args.file is not None else args.config
    with startup():
        config = _load(path, require_secrets=not args.no_env)
    from schemas.config_loader import config_warnings

    for warning in config_warnings(path, config):
        print(f"hookstream: warning: {warning}", file=sys.stderr)
    print(
        f"{path}: ok ({len(config.sources)} sources, {len(config.providers)} providers, "
        f"{len(config.flows)} flows)"
    )
    return 0


def cmd_schemas_export(args: argparse.Namespace) -> int:
    from schemas.export import export_schemas

    try:
        written = export_schemas(Path(args.directory))
    except OSError as exc:
        where = exc.filename if exc.filename is not None else args.directory
        reason = exc.strerror or str(exc)
        return fail(f"{where}: cannot write the JSON Schemas there: {reason}", EXIT_BAD_INPUT)
    for path in written:
        print(path)
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from streams.cli import loops
    from streams.gateway.server import serve

    config = _load(args.config)
    port = config.gateway.port if args.port is None else args.port
    try:
        # uvloop: the gateway's hot path is socket I/O; it serves more requests per core.
        with contextlib.suppress(KeyboardInterrupt):
            loops.run(serve(config, port=args.port))
    except BrokerUnavailable as exc:
        return fail(f"{exc} — {unreachable_hint(config, args.config)}", EXIT_UNAVAILABLE)
    except OSError as exc:
        if not is_listen_error(exc):
            raise
        option = f"--port or gateway.port in {args.config}"
        return fail(listen_hint(config.gateway.host, port, exc, option=option), EXIT_CANNOT_LISTEN)
    return 0


def _wait_for_topics(config: HookstreamConfig, config_path: str, wait_s: float) -> None:
    import asyncio

    from streams.kafka.admin import ensure_topics

    deadline = time.monotonic() + wait_s
    # Each failed attempt would print aiokafka's errors (logging is not set up before Faust
    # starts): the outcome is one line below. The worker then logs aiokafka as usual.
    with quiet_kafka_logs():
        while True:
            try:
                asyncio.run(ensure_topics(config.kafka))
                return
            except BrokerUnavailable as exc:
                # A refused login or certificate (KafkaAccessDenied) cannot heal by waiting.
                if not exc.retriable:
                    raise SystemExit(fail(str(exc), EXIT_UNAVAILABLE)) from None
                if time.monotonic() > deadline:
                    message = (
                        f"{exc} — {unreachable_hint(config, config_path)}, or wait longer "
                        "with --wait-for-broker-s"
                    )
                    raise SystemExit(fail(message, EXIT_UNAVAILABLE)) from None
                time.sleep(1.0)


def _require_free_port(host: str, port: int, *, option: str) -> None:
    """Refuse to start when the metrics port cannot be listened on.

    The metrics server starts inside the Faust worker, where a failed bind crashes the worker
    with a page of tracebacks after it has joined its group. Binding here first (with
    SO_REUSEADDR, as the metrics server binds) finds a busy port in one line before any of
    that; a process that takes the port in between still fails later, loudly.
    """
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        message = f"--metrics-host {host!r}: not a host name or address here ({exc})"
        raise SystemExit(fail(message, EXIT_BAD_INPUT)) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if not is_listen_error(exc):
                raise
            message = listen_hint(host, port, exc, option=option)
            raise SystemExit(fail(message, EXIT_CANNOT_LISTEN)) from None


def _run_faust(args: argparse.Namespace) -> int:
    import faust

    from agents.app import create_app

    # Before any loop exists: the main loop and Faust's consumer thread's are both uvloop's.
    config, loop_name = _prepare_consumer(args)
    app = create_app(config, metrics_port=args.metrics_port, metrics_host=args.metrics_host)
    app.on_stuck_stop = _exit_unavailable
    if args.log_format == "json":
        # Logging is set up already (streams.logs): Faust would replace it with its own
        # (colored text, stdout redirected at WARN). Without its spinner, "Ready" is logged.
        worker = faust.Worker(
            app,
            loglevel=args.loglevel,
            quiet=True,
            override_logging=False,
            stdout=sys.stdout,
            stderr=sys.stderr,
        )
        worker.spinner = None
    else:
        worker = faust.Worker(app, loglevel=args.loglevel, quiet=True)
    logging.getLogger(__name__).info("worker: event loop %s", loop_name)
    worker.execute_from_commandline()  # exits the process when the worker stops
    return 0


def _exit_unavailable() -> None:
    """A worker whose stop is stuck on Kafka (agents.faust_app): out now, logs flushed."""
    logging.shutdown()
    os._exit(EXIT_UNAVAILABLE)


def _prepare_consumer(args: argparse.Namespace) -> tuple[HookstreamConfig, str]:
    """What the worker and the sink worker do before they start: the config, the fast loop
    policy (set before any loop exists; returns its name), the metrics port checked free and
    the topics waited for, so that each of these fails with one line before anything runs."""
    from streams.cli import loops

    config = _load(args.config)
    loop_name = loops.use_fast_loop_policy()
    if args.metrics_port is not None:
        option = f"--metrics-port (or ${METRICS_PORT_ENV})"
        _require_free_port(args.metrics_host, args.metrics_port, option=option)
    _wait_for_topics(config, args.config, args.wait_for_broker_s)
    return config, loop_name


def cmd_worker(args: argparse.Namespace) -> int:
    return _run_faust(args)


def cmd_sinks(args: argparse.Namespace) -> int:
    """The sink worker: a plain aiokafka consumer, no Faust app (agents.sinks.wiring)."""
    import asyncio

    from aiokafka.errors import InconsistentGroupProtocolError

    from agents.sinks.wiring import run_sink_worker

    config, loop_name = _prepare_consumer(args)
    logging.getLogger(__name__).info("sinks: event loop %s", loop_name)
    try:
        asyncio.run(
            run_sink_worker(config, metrics_port=args.metrics_port, metrics_host=args.metrics_host)
        )
    except BrokerUnavailable as exc:
        return fail(f"{exc} — {unreachable_hint(config, args.config)}", EXIT_UNAVAILABLE)
    except InconsistentGroupProtocolError:
        group = f"{config.kafka.topic_prefix}-sinks"
        message = (
            f"consumer group {group}: its members assign partitions another way (sink workers "
            "of a hookstream from before the sinks left Faust?); stop them, then start this one: "
            "the group's committed offsets are kept"
        )
        return fail(message, EXIT_UNAVAILABLE)
    return 0


def _faust_args(parser: argparse.ArgumentParser) -> None:
    _config_arg(parser)
    _loglevel_arg(parser)
    parser.add_argument(
        "--wait-for-broker-s",
        type=non_negative_seconds,
        default=60.0,
        help="how long to wait for Kafka at start (default 60)",
    )
    parser.add_argument(
        "--metrics-port",
        type=port_type(any_free=False),
        default=env_default(METRICS_PORT_ENV),
        help=f"serve Prometheus /metrics on this port (default: ${METRICS_PORT_ENV}, else "
        "off; 9464 is customary)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address for --metrics-port (default 127.0.0.1)",
    )


def _command(commands: Any, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line help is also its description (``hookstream NAME -h``)."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=text, description=text)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole ``hookstream`` parser: every subcommand with its help (the CLI reference page
    in docs/ is generated from it)."""
    parser = argparse.ArgumentParser(
        prog="hookstream",
        description="Webhooks in, AI-processed updates out, over Apache Kafka: run the gateway, "
        "the worker and the sinks, and operate them (dlq, replay, publish, tail).",
        epilog=EPILOG,
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="print the installed version and exit"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gateway = _command(commands, "gateway", "run the webhook gateway")
    _config_arg(gateway)
    gateway.add_argument(
        "--port",
        type=port_type(any_free=True),
        default=None,
        help="listen on this port instead of gateway.port (0: any free port)",
    )
    _loglevel_arg(gateway)
    gateway.set_defaults(func=cmd_gateway)

    worker = _command(commands, "worker", "run the enrich and AI agents (Faust worker)")
    _faust_args(worker)
    worker.set_defaults(func=cmd_worker)

    sinks = _command(commands, "sinks", "run the sinks (own consumer group)")
    _faust_args(sinks)
    sinks.set_defaults(func=cmd_sinks)

    config = _command(commands, "config", "work with the config file")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check = _command(config_commands, "check", "validate a config file")
    _config_arg(check)
    check.add_argument(
        "file",
        nargs="?",
        default=None,
        help="the file to check: the same as -c FILE (kept for compatibility)",
    )
    check.add_argument(
        "--no-env", action="store_true", help="do not require the secrets' environment variables"
    )
    check.set_defaults(func=cmd_config_check)

    schemas = _command(commands, "schemas", "JSON Schemas of the topics")
    schema_commands = schemas.add_subparsers(
        dest="schemas_command", required=True, metavar="COMMAND"
    )
    export = _command(schema_commands, "export", "write one JSON Schema per topic")
    export.add_argument("directory", help="where to write them (created if missing)")
    export.set_defaults(func=cmd_schemas_export)

    from streams.cli import sign

    # The operator commands and sign load the config without its secrets: they use none
    # (sign checks its one source's secret itself), and an operator's shell should not need
    # every signing secret and the AI key to tail a topic. The services load them all.
    sign.add_command(commands, _load_without_secrets, _config_arg)

    dev = _command(commands, "dev", "local simulators")
    # Optional to argparse, so that its own "required: simulator, sim_args" (sim_args is
    # not) gives way to cmd_dev's line that lists the simulators.
    dev.add_argument("simulator", nargs="?", choices=SIMULATORS, help="the simulator to run")
    dev.add_argument(
        "sim_args", nargs=argparse.REMAINDER, help="its own options (hookstream dev NAME -h)"
    )
    dev.usage = f"%(prog)s [-h] {{{','.join(SIMULATORS)}}} ..."
    dev.set_defaults(func=lambda a: cmd_dev(a, dev))

    from streams.cli import ops as cli_ops  # dlq, replay
    from streams.cli import pubsub  # publish, tail
    from streams.cli import trace as cli_trace

    cli_ops.add_commands(commands, _load_without_secrets, _config_arg)
    pubsub.add_commands(commands, _load_without_secrets, _config_arg)
    from streams.cli import console  # the web console

    console.add_command(commands, _load_without_secrets, _config_arg)
    cli_trace.add_command(commands, _load_without_secrets, _config_arg)
    from streams.cli import batcher  # the batch flows' jobs: it calls the models (secrets)

    batcher.add_command(commands, _load, _config_arg, _loglevel_arg)
    from streams.cli import flowtest  # flow test: offline, secrets only for --call-model

    flowtest.add_command(commands, _load_without_secrets, _config_arg)
    for command in _every_command(parser):
        _log_format_arg(command)
    return parser


def cmd_dev(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.simulator is None:
        parser.error(f"give the simulator to run: one of {', '.join(SIMULATORS)}")
    if args.simulator == "ai-sim":
        from streams.dev import ai_sim

        return ai_sim.main(args.sim_args)
    if args.simulator == "slack-sim":
        from streams.dev import slack_sim

        return slack_sim.main(args.sim_args)
    from streams.dev import crm_sim

    return crm_sim.main(args.sim_args)


def _stdout_closed() -> int:
    """The reader of our stdout has gone (``hookstream tail … | head``): that is how it says it
    has enough, so exit quietly. stdout goes to /dev/null first, or the interpreter's own
    flush at exit fails again and prints a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    if args.command in SERVICES:  # spans when $OTEL_EXPORTER_OTLP_ENDPOINT is set
        tracing.setup(args.command)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        return _stdout_closed()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
