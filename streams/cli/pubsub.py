"""``hookstream publish`` and ``hookstream tail``: JSON lines in as events, any topic out.

publish builds each event as the gateway would for the configured ``--source`` (its id, type and
partition-key rules), so an event published here and the same webhook posted to the gateway are
one event downstream (same id, same key). A source without a partition-key rule is refused unless
the command says how to key the events (``--key-field``) or accepts a key per event
(``--allow-random-key``): each event's own id as its key spreads one customer's events over every
partition, and the pipeline's order per key then means nothing.

tail prints records as pretty JSON, or one JSON object per line (``--jsonl``, for jq), optionally
only those with one key (``--key``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from schemas.errors import ToolError
from streams.cli.exits import EXIT_BAD_INPUT, fail
from streams.cli.ops import ConfigArg, Loader, positive_int, run, startup, topic_name
from streams.cli.topics import owned_topics

if TYPE_CHECKING:
    from schemas.config import HookstreamConfig
    from schemas.config_sources import SourceConfig
    from schemas.events import CloudEvent


PUBLISH_DESCRIPTION = (
    "Publish one CloudEvent per JSON line, built as the gateway builds it for the source: "
    "the same id, type and partition key as the same webhook posted to the gateway. A source "
    "without partition_key is refused unless --key-field names the key's field or "
    "--allow-random-key accepts each event's own id as its key (which gives up the order per "
    "customer)."
)
TAIL_DESCRIPTION = (
    "Print a topic's records as they arrive (from the end, or --from-beginning): pretty JSON, "
    "or one JSON object per line with --jsonl, for jq. The value is parsed when it is JSON."
)


def read_input(path: str, *, what: str) -> bytes:
    """A file's bytes, or stdin's for ``-``; a file that cannot be read is bad input."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ToolError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None


def configured_source(config: HookstreamConfig, args: argparse.Namespace) -> SourceConfig:
    """The source ``--source`` names; refused, with the configured ones, when there is none."""
    source = config.source(args.source)
    if source is None:
        known = ", ".join(s.name for s in config.sources) or "(none)"
        raise ToolError(
            f"--source {args.source!r} is not a source of {args.config}; its sources: {known}"
        )
    return source


def publish_source(config: HookstreamConfig, args: argparse.Namespace) -> SourceConfig:
    """The configured source events are published for, with the partition-key rule to use;
    refuses an unknown source and a source without a key rule (see the module doc)."""
    source = configured_source(config, args)
    if args.key_field:
        return source.model_copy(update={"partition_key": args.key_field})
    if source.partition_key is None and not args.allow_random_key:
        raise ToolError(
            f"source {source.name!r} has no partition_key in {args.config}: give the payload "
            "field that holds the key with --key-field (e.g. --key-field customer_id), or "
            "--allow-random-key to key each event by its own id (no order per customer)"
        )
    return source


def read_events(
    args: argparse.Namespace, source: SourceConfig, data: bytes, where: str
) -> list[CloudEvent]:
    """One CloudEvent per JSON line, built by the gateway's rules for ``source``."""
    from schemas.errors import InvalidPayload
    from streams.client import parse_json_line
    from streams.gateway.ingest import build_event

    try:
        lines = data.decode()
    except UnicodeDecodeError as exc:
        raise ToolError(f"{where}: not UTF-8 text: {exc}") from None
    key_rule = "--key-field" if args.key_field else f"the partition_key of source {source.name!r}"
    events = []
    for number, line in enumerate(lines.splitlines(), 1):
        if not line.strip():
            continue
        payload = parse_json_line(line, number=number, where=where)
        try:
            event = build_event(source, {}, line.strip().encode(), payload, forwarded_headers=())
        except InvalidPayload as exc:
            if exc.code == "missing_partition_key":
                raise ToolError(
                    f"{where}:{number}: the payload has no field {source.partition_key!r} "
                    f"({key_rule})"
                ) from None
            raise ToolError(f"{where}:{number}: {exc}") from None
        if args.type is not None:
            event = event.model_copy(update={"type": args.type})
        events.append(event)
    return events


def cmd_publish(args: argparse.Namespace, load: Loader) -> int:
    with startup():
        from streams.client import Publisher

        config = load(args.config)
    try:
        source = publish_source(config, args)
        where = "stdin" if args.file == "-" else args.file
        events = read_events(args, source, read_input(args.file, what="JSON lines"), where)
    except ToolError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)

    async def main() -> int:
        # A missing topic is refused by the Publisher as it starts (UnknownTopic, exit 4).
        async with Publisher(settings=config.kafka) as publisher:
            done = 0
            for start in range(0, len(events), args.batch):
                done += len(await publisher.publish_many(events[start : start + args.batch]))
        print(f"published {done} event(s) to {publisher.topic}", file=sys.stderr)
        return 0

    return run(main(), args, config)


def record_json(record: Any) -> dict[str, Any]:
    """A record as ``tail`` shows it; the value parsed when it is JSON, else as text."""
    try:
        value: Any = orjson.loads(record.value or b"null")
    except orjson.JSONDecodeError:
        value = (record.value or b"").decode(errors="replace")
    when = datetime.fromtimestamp(record.timestamp / 1000, UTC)
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "key": record.key.decode(errors="replace") if record.key is not None else None,
        "headers": {k: bytes(v).decode(errors="replace") for k, v in record.headers},
        "value": value,
    }


async def until_stdout_closes(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work``; if stdout is a pipe whose reader goes away first, stop it and raise
    BrokenPipeError, which ``hookstream`` ends quietly with exit 0.

    ``hookstream tail … | head -1`` on a quiet topic: head has exited, but a write is the
    only thing that would find out, and no record comes to be written, so tail waited for
    ever. The write end of a pipe reports an error to epoll once its last reader has closed
    (EPOLLERR, which epoll reports whatever was asked for): watched as a reader, it wakes
    the loop then. While the reader is there, a pipe's write end never becomes readable.
    """
    import asyncio
    import errno
    import os
    import stat

    task = asyncio.ensure_future(work)
    try:
        fd = sys.stdout.fileno()
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except (OSError, ValueError):  # no real stdout (e.g. replaced in tests): nothing to watch
        is_pipe = False
    if not is_pipe:
        await task
        return
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()

    def reader_gone() -> None:
        if not closed.done():
            closed.set_result(None)

    loop.add_reader(fd, reader_gone)
    try:
        await asyncio.wait([task, closed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(fd)
        if not task.done():  # the reader has gone, or we are being cancelled
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()  # done first: its exception, if any
        return
    raise BrokenPipeError(errno.EPIPE, "stdout's reader has gone")


def cmd_tail(args: argparse.Namespace, load: Loader) -> int:
    with startup():
        from aiokafka.errors import KafkaError

        from streams.kafka.connection import start_failure
        from streams.kafka.reader import new_consumer, partitions_of

        config = load(args.config)
    try:
        topic = topic_name(config, args.topic)
    except ToolError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    option = 0 if args.jsonl else orjson.OPT_INDENT_2
    wanted = args.key.encode() if args.key is not None else None

    async def main() -> int:
        consumer = new_consumer(config.kafka)
        shown = 0
        try:
            try:
                await consumer.start()
            except KafkaError as exc:
                raise await start_failure(config.kafka, exc) from None
            tps = await partitions_of(consumer, topic)
            consumer.assign(tps)
            if args.from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)

            async def follow() -> None:
                nonlocal shown
                async for record in consumer:
                    if wanted is not None and record.key != wanted:
                        continue
                    print(orjson.dumps(record_json(record), option=option).decode(), flush=True)
                    shown += 1
                    if args.max is not None and shown >= args.max:
                        return

            await until_stdout_closes(follow())
        finally:
            await consumer.stop()
        return 0

    return run(main(), args, config)


def add_commands(commands: Any, load: Loader, config_arg: ConfigArg) -> None:
    """Add publish and tail to the ``hookstream`` parser."""
    text = "publish JSON lines as CloudEvents, built by a configured source's rules"
    publish = commands.add_parser("publish", help=text, description=PUBLISH_DESCRIPTION)
    config_arg(publish)
    publish.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="JSON lines file, or - for stdin"
    )
    publish.add_argument(
        "--source", required=True, help="a source of the config: its id, type and key rules"
    )
    publish.add_argument("--type", help="event type (default: the source's type rules)")
    publish.add_argument(
        "--key-field",
        metavar="PATH",
        help="payload field (dotted path) of the partition key (default: the source's "
        "partition_key)",
    )
    publish.add_argument(
        "--allow-random-key",
        action="store_true",
        help="publish for a source without partition_key: each event keyed by its own id "
        "(no order per customer)",
    )
    publish.add_argument(
        "--batch",
        type=positive_int,
        default=500,
        metavar="N",
        help="events per durable batch (default 500)",
    )
    publish.set_defaults(func=lambda a: cmd_publish(a, load))

    text = "print a topic's records as JSON, following"
    tail = commands.add_parser("tail", help=text, description=TAIL_DESCRIPTION)
    config_arg(tail)
    tail.add_argument(
        "topic",
        metavar="TOPIC",
        help=f"short name of a topic hookstream owns ({', '.join(owned_topics('p'))}) "
        "or a full topic name",
    )
    tail.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest record, not the end"
    )
    tail.add_argument(
        "--max", type=positive_int, default=None, metavar="N", help="stop after N records shown"
    )
    tail.add_argument(
        "--jsonl",
        action="store_true",
        help="one JSON object per line (topic, partition, offset, timestamp, key, headers, "
        "value), for jq",
    )
    tail.add_argument("--key", help="only records with this key")
    tail.set_defaults(func=lambda a: cmd_tail(a, load))
