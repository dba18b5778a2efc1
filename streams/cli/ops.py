"""The operator and client commands of ``hookstream``: dlq, replay, publish, tail.

Registered on the main parser by :func:`add_commands` (``streams.cli.main``). Each loads the config
for the broker address and topic prefix, and exits 2 on bad input (the message names the option
or line at fault) and 3 when Kafka cannot be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from schemas.errors import BrokerUnavailable, ToolError

if TYPE_CHECKING:
    from schemas.config import HookstreamConfig

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
Loader = Callable[[str], "HookstreamConfig"]


@contextlib.contextmanager
def startup() -> Iterator[None]:
    """A command's imports and config load, without the cyclic garbage collector.

    They create some 10^5 objects that live as long as the process (modules, pydantic's
    schemas, the config); the collector went over them ~100 times, ~12 ms of a 0.25 s
    ``replay`` start (bench/replay). After the block they are frozen (``gc.freeze``: left
    out of later collections, which then stay short) and the collector runs as before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def topic_name(config: HookstreamConfig, topic: str) -> str:
    """A role (``events``) or a full topic name (``hookstream.events``)."""
    from schemas import topics as catalogue

    return f"{config.kafka.topic_prefix}.{topic}" if topic in catalogue.ROLES else topic


def _run(coro: Any) -> int:
    import asyncio

    try:
        code: int = asyncio.run(coro)
        return code
    except ToolError as exc:
        print(f"hookstream: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokerUnavailable as exc:
        print(f"hookstream: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


# --- dlq ------------------------------------------------------------------------------------


def _dlq_filter(args: argparse.Namespace) -> Any:
    from streams.kafka.reader import parse_time
    from streams.ops.dlq import DLQFilter

    return DLQFilter(
        stage=args.stage,
        error_class=args.error_class,
        flow=args.flow,
        since=parse_time(args.since, option="--since") if args.since else None,
        until=parse_time(args.until, option="--until") if args.until else None,
    )


def _print_entries(entries: list[Any], as_json: bool) -> None:
    if as_json:
        for entry in entries:
            print(orjson.dumps(entry.as_json()).decode())
        return
    print(f"{'DLQ':<10} {'STAGE':<7} {'ERROR':<22} {'FLOW':<18} {'LAST FAILURE':<20} MESSAGE")
    for e in entries:
        letter = e.letter
        when = letter.last_failure_at.strftime("%Y-%m-%d %H:%M:%S") if letter else "?"
        mark = " (redriven)" if e.redriven else ""
        print(
            f"{e.coordinates:<10} {letter.stage if letter else '?':<7} "
            f"{letter.error_class if letter else '?':<22} {e.flow or '-':<18} {when:<20} "
            f"{(letter.error_message if letter else '')[:80]}{mark}"
        )


def cmd_dlq(args: argparse.Namespace, load: Loader) -> int:
    with startup():
        from streams.ops.dlq import DeadLetters

        config = load(args.config)

    async def main() -> int:
        letters = DeadLetters(config.kafka)
        if args.dlq_command == "show":
            entry = await letters.get(args.record)
            print(orjson.dumps(entry.as_json(with_value=True), option=orjson.OPT_INDENT_2).decode())
            return 0
        selection = _dlq_filter(args)
        if args.dlq_command == "list":
            entries = await letters.entries(selection)
            _print_entries(entries, args.json)
            print(f"{len(entries)} dead letter(s)", file=sys.stderr)
            return 0
        done, already = await letters.redrive(selection, dry_run=args.dry_run)
        verb = "would redrive" if args.dry_run else "redrove"
        for entry in done:
            target = entry.letter.original_topic if entry.letter else "?"
            print(f"{verb} {entry.coordinates} → {target}")
        print(f"{verb} {len(done)}; {already} matching were redriven before", file=sys.stderr)
        return 0

    return _run(main())


def _add_dlq(commands: Any, load: Loader, config_arg: Callable[[Any], None]) -> None:
    dlq = commands.add_parser("dlq", help="list, show and redrive dead letters")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    for name, text in (("list", "list dead letters"), ("redrive", "send them back, once each")):
        p = sub.add_parser(name, help=text)
        config_arg(p)
        p.add_argument("--stage", help="enrich, ai or sink")
        p.add_argument("--error-class", help="e.g. PermanentRemoteError")
        p.add_argument("--flow")
        p.add_argument("--since", help="last failure at or after this ISO 8601 time")
        p.add_argument("--until", help="last failure before this ISO 8601 time")
        if name == "list":
            p.add_argument("--json", action="store_true", help="one JSON object per line")
        else:
            p.add_argument("--dry-run", action="store_true", help="only print what would go")
        p.set_defaults(func=lambda a: cmd_dlq(a, load))
    show = sub.add_parser("show", help="one dead letter with its headers and value")
    config_arg(show)
    show.add_argument("record", help="PARTITION:OFFSET, as `dlq list` prints it")
    show.set_defaults(func=lambda a: cmd_dlq(a, load))


# --- replay ---------------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most 5 times a second."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self._drawn = 0.0
        self._finished = False  # the last line is drawn once

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if (now - self._drawn < 0.2 and done < total) or self._finished:
            return
        self._finished = done >= total
        self._drawn = now
        share = done / total if total else 1.0
        filled = int(share * self.width)
        rate = done / max(now - self.started, 1e-6)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done:,}/{total:,} records {rate:,.0f}/s")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_replay(args: argparse.Namespace, load: Loader) -> int:
    with startup():
        from streams.kafka.reader import parse_position
        from streams.ops.replay import Replayer, ReplayFilter

        config = load(args.config)

    async def main() -> int:
        replayer = Replayer(
            config,
            topic_name(config, args.topic),
            start=parse_position(args.from_, option="--from"),
            end=parse_position(args.to, option="--to") if args.to else None,
            selection=ReplayFilter(source=args.source, type=args.type, flow=args.flow),
        )
        if replayer.calls_model and not args.yes:
            selected, estimate = await replayer.estimate()
            print(
                f"replay of {replayer.topic}: {selected:,} record(s); may call the model "
                f"{estimate.calls:,} time(s) {dict(estimate.by_flow)}, up to "
                f"~{estimate.prompt_tokens:,} prompt + {estimate.completion_tokens:,} completion "
                "tokens (results in the AI cache are reused and cost nothing)",
                file=sys.stderr,
            )
            if estimate.calls and not _confirm("Replay?"):
                print("replay: not confirmed (use --yes to skip the question)", file=sys.stderr)
                return 1
        bar = None if args.no_progress else ProgressBar()
        stats = await replayer.run(progress=bar)
        print(
            f"replay {stats.replay_id}: window {stats.window:,}, read {stats.read:,}, "
            f"replayed {stats.replayed:,}, filtered out {stats.filtered_out:,} "
            f"in {stats.elapsed_s:.1f} s ({stats.events_per_s:,.0f} records/s)"
        )
        return 0

    return _run(main())


def _add_replay(commands: Any, load: Loader, config_arg: Callable[[Any], None]) -> None:
    replay = commands.add_parser("replay", help="re-inject a window of a topic, marked as replay")
    config_arg(replay)
    replay.add_argument("--topic", required=True, help="events, enriched, results or a full name")
    replay.add_argument(
        "--from", dest="from_", required=True, help="first offset (every partition) or ISO time"
    )
    replay.add_argument("--to", help="end offset or ISO time, exclusive (default: now)")
    replay.add_argument("--source")
    replay.add_argument("--type")
    replay.add_argument("--flow")
    replay.add_argument("--yes", "-y", action="store_true", help="do not ask before model calls")
    replay.add_argument("--no-progress", action="store_true")
    replay.set_defaults(func=lambda a: cmd_replay(a, load))


# --- publish / tail -------------------------------------------------------------------------


def _read_events(args: argparse.Namespace, config: HookstreamConfig) -> list[Any]:
    """One CloudEvent per JSON line, built like the gateway builds them for a configured
    source (its id, type and partition-key rules), else from --type and --key-field."""
    from schemas.errors import InvalidPayload
    from streams.client import make_event, parse_json_line
    from streams.gateway.ingest import build_event

    source = config.source(args.source)
    where = "stdin" if args.file == "-" else args.file
    lines = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    events = []
    for number, line in enumerate(lines.splitlines(), 1):
        if not line.strip():
            continue
        payload = parse_json_line(line, number=number, where=where)
        if source is not None and args.type is None:
            try:
                event = build_event(
                    source, {}, line.strip().encode(), payload, forwarded_headers=()
                )
            except InvalidPayload as exc:
                raise ToolError(f"{where}:{number}: {exc}") from None
        else:
            key = payload.get(args.key_field) if args.key_field else None
            event = make_event(
                payload,
                source=args.source,
                type=args.type or "webhook",
                key=str(key) if key is not None else None,
            )
        events.append(event)
    return events


def cmd_publish(args: argparse.Namespace, load: Loader) -> int:
    with startup():
        from streams.client import Publisher

        config = load(args.config)

    async def main() -> int:
        events = _read_events(args, config)
        async with Publisher(settings=config.kafka) as publisher:
            done = 0
            for start in range(0, len(events), args.batch):
                done += len(await publisher.publish_many(events[start : start + args.batch]))
        print(f"published {done} event(s) to {publisher.topic}", file=sys.stderr)
        return 0

    return _run(main())


def cmd_tail(args: argparse.Namespace, load: Loader) -> int:
    with startup():
        from streams.kafka.reader import new_consumer, partitions_of

        config = load(args.config)
    topic = topic_name(config, args.topic)

    async def main() -> int:
        consumer = new_consumer(config.kafka.bootstrap_servers)
        shown = 0
        try:
            await consumer.start()
            tps = await partitions_of(consumer, topic)
            consumer.assign(tps)
            if args.from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
            async for record in consumer:
                try:
                    value: Any = orjson.loads(record.value or b"null")
                except orjson.JSONDecodeError:
                    value = (record.value or b"").decode(errors="replace")
                shown_record = {
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "key": record.key.decode(errors="replace") if record.key else None,
                    "headers": {k: bytes(v).decode(errors="replace") for k, v in record.headers},
                    "value": value,
                }
                print(orjson.dumps(shown_record, option=orjson.OPT_INDENT_2).decode(), flush=True)
                shown += 1
                if args.max is not None and shown >= args.max:
                    break
        finally:
            await consumer.stop()
        return 0

    return _run(main())


def add_commands(commands: Any, load: Loader, config_arg: Callable[[Any], None]) -> None:
    """Add dlq, replay, publish and tail to the ``hookstream`` parser."""
    _add_dlq(commands, load, config_arg)
    _add_replay(commands, load, config_arg)

    publish = commands.add_parser("publish", help="publish JSON lines as CloudEvents")
    config_arg(publish)
    publish.add_argument("file", nargs="?", default="-", help="JSON lines file, or - for stdin")
    publish.add_argument("--source", required=True, help="the event source (a configured one")
    publish.add_argument("--type", help="event type (default: the source's type rules)")
    publish.add_argument("--key-field", help="payload field of the partition key (with --type)")
    publish.add_argument("--batch", type=int, default=500, help="events per durable batch")
    publish.set_defaults(func=lambda a: cmd_publish(a, load))

    tail = commands.add_parser("tail", help="print a topic's records as pretty JSON, following")
    config_arg(tail)
    tail.add_argument("topic", help="events, results, dlq, … or a full topic name")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int, default=None, help="stop after N records")
    tail.set_defaults(func=lambda a: cmd_tail(a, load))
