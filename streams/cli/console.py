"""``hookstream console``: serve the web console (:mod:`streams.console`).

Registered on the main parser by :func:`add_command`. It loads the config without its secrets
(it uses only the Kafka settings and the flows' names, and shows no secret). A non-loopback
``--host`` is refused without ``$HOOKSTREAM_CONSOLE_TOKEN`` (exit 2), before anything listens.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from schemas.errors import ToolError
from streams.cli.exits import EXIT_BAD_INPUT, EXIT_CANNOT_LISTEN, fail
from streams.http.ports import is_listen_error, listen_hint, port_type

if TYPE_CHECKING:
    from schemas.config import HookstreamConfig

METRICS_URLS_ENV = "HOOKSTREAM_CONSOLE_METRICS_URLS"
DEFAULT_PORT = 8090


def metrics_urls(args: argparse.Namespace) -> list[str]:
    """``--metrics-url`` (repeatable), else ``$HOOKSTREAM_CONSOLE_METRICS_URLS`` (commas)."""
    if args.metrics_url:
        return list(args.metrics_url)
    text = os.environ.get(METRICS_URLS_ENV, "")
    return [url.strip() for url in text.split(",") if url.strip()]


def cmd_console(args: argparse.Namespace, load: Callable[[str], HookstreamConfig]) -> int:
    import asyncio

    from streams.console.app import serve
    from streams.console.security import TOKEN_ENV, bind_token

    try:
        token = bind_token(args.host, os.environ.get(TOKEN_ENV))
    except ToolError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    config = load(args.config)

    def started(url: str) -> None:
        print(f"hookstream console listening on {url}", flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                serve(
                    config,
                    host=args.host,
                    port=args.port,
                    token=token,
                    metrics_urls=metrics_urls(args),
                    started=started,
                )
            )
    except OSError as exc:
        if not is_listen_error(exc):
            raise
        return fail(listen_hint(args.host, args.port, exc, option="--port"), EXIT_CANNOT_LISTEN)
    return 0


def add_command(
    commands: Any,
    load: Callable[[str], HookstreamConfig],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    text = "serve the web console: flows, event search, dead letters, live results"
    console = commands.add_parser("console", help=text, description=text)
    config_arg(console)
    console.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other needs $HOOKSTREAM_CONSOLE_TOKEN)",
    )
    console.add_argument(
        "--port",
        type=port_type(any_free=True),
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port)",
    )
    console.add_argument(
        "--metrics-url",
        action="append",
        metavar="URL",
        help="a worker's or sink worker's /metrics, for breaker and sink-gate states "
        f"(repeatable; default: ${METRICS_URLS_ENV}, comma-separated)",
    )
    console.set_defaults(func=lambda a: cmd_console(a, load))
