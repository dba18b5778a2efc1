"""``hookstream batcher``: answer the requests of ``ai.mode: batch`` flows through the
providers' batch APIs (:mod:`streams.ops.batcher`), with the AI stage's own code
(:class:`streams.cli.replay_batch_backend.BatchBackend`); wired here because only the CLI may
join ``agents`` and ``streams.ops``."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from schemas.errors import BrokerUnavailable, Fenced, RemoteError, ToolError, UnknownTopic
from streams.cli import loops
from streams.cli.exits import EXIT_NO_TOPIC, EXIT_OK, EXIT_REPLACED, EXIT_UNAVAILABLE, fail
from streams.http.ports import port_type

if TYPE_CHECKING:
    from schemas.config import HookstreamConfig

log = logging.getLogger(__name__)


def add_command(
    commands: Any,
    load: Callable[[str], HookstreamConfig],
    config_arg: Callable[[argparse.ArgumentParser], None],
    loglevel_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    text = (
        "answer the ai.mode: batch flows through the providers' batch APIs "
        "(one per prefix: a newer one fences the others)"
    )
    parser: argparse.ArgumentParser = commands.add_parser("batcher", help=text, description=text)
    config_arg(parser)
    loglevel_arg(parser)
    parser.add_argument(
        "--metrics-port",
        type=port_type(any_free=False),
        default=None,
        help="serve /metrics, /healthz and /readyz on this port (default: none)",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)"
    )
    parser.set_defaults(func=lambda args: cmd_batcher(args, load))


def cmd_batcher(args: argparse.Namespace, load: Callable[[str], HookstreamConfig]) -> int:
    # Imported here, not with the parser: every command builds it (bench/replay, issue 16).
    from aiokafka.errors import KafkaError

    config = load(args.config)
    try:
        return loops.run(_run(config, args))  # uvloop where installed
    except (BrokerUnavailable, KafkaError) as exc:
        return fail(f"batcher: Kafka: {exc} — check kafka.bootstrap_servers", EXIT_UNAVAILABLE)
    except UnknownTopic as exc:
        return fail(
            f"batcher: {exc} — the gateway creates hookstream's topics at its start: start it "
            f"first (kafka.topic_prefix {config.kafka.topic_prefix!r})",
            EXIT_NO_TOPIC,
        )
    except Fenced as exc:  # a newer batcher of this prefix: it resumes this one's rounds
        return fail(f"batcher: {exc} — run one batcher per prefix", EXIT_REPLACED)
    except (RemoteError, ToolError) as exc:  # a provider refused or did not answer a job request
        return fail(
            f"batcher: {exc} — its jobs so far are on its journal: start it again to resume",
            EXIT_UNAVAILABLE,
        )


async def _run(config: HookstreamConfig, args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from agents.ai.task import ProviderRuntime
    from agents.outbound.http import new_session
    from streams.cli.replay_batch_backend import BatchBackend
    from streams.metrics.exposition import start_metrics_server
    from streams.ops.batcher import Batcher

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    if args.metrics_port is not None:
        runner = await start_metrics_server(args.metrics_host, args.metrics_port)
    try:
        async with new_session() as session:
            runtimes = {p.name: ProviderRuntime.build(p, session) for p in config.providers}
            backend = BatchBackend(config, runtimes, session)
            log.info("batcher: started (%s)", config.kafka.topic_prefix)
            stats = await Batcher(config, backend).run(stop)
    finally:
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()
    log.info(
        "batcher: stopped; %d round(s) written (%d resumed at start): %d result(s), "
        "%d dead-lettered, $%.4f at batch prices",
        stats.rounds,
        stats.rounds_resumed,
        stats.results,
        stats.dead_lettered,
        stats.cost_usd,
    )
    return EXIT_OK
