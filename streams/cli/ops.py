"""The operator commands of ``hookstream``: dlq and replay (publish and tail: :mod:`.pubsub`).

Registered on the main parser by :func:`add_commands` (``streams.cli.main``). Each loads the
config for the broker address and topic prefix, without its secrets (it uses none of them). An
expected failure is one line on stderr that says what to do, with the exit status of
:mod:`streams.cli.exits` (2 bad input, 3 Kafka unreachable, 4 no such topic).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import re
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from schemas.errors import BrokerUnavailable, ToolError, UnknownTopic
from schemas.topics import DEAD_LETTER_STAGES
from streams.cli.exits import (
    EXIT_BAD_INPUT,
    EXIT_DECLINED,
    EXIT_INTERRUPTED,
    EXIT_NO_TOPIC,
    EXIT_UNAVAILABLE,
    fail,
)
from streams.cli.topics import owned_topics, resolve_topic

if TYPE_CHECKING:
    from schemas.config import HookstreamConfig
    from streams.kafka.reader import Position

Loader = Callable[[str], "HookstreamConfig"]
ConfigArg = Callable[[argparse.ArgumentParser], None]
# The stages that dead-letter (the ``stage`` of a dead letter): agents.stages' enrich and ai,
# agents.sinks' sink, streams.ops.replay's replay. A unit test holds this list to those
# modules' own names.
STAGES = DEAD_LETTER_STAGES


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


def topic_name(config: HookstreamConfig, topic: str, *, option: str = "topic") -> str:
    """A short name (``events``, ``dedupe``) or a full topic name (``hookstream.events``)."""
    return resolve_topic(config.kafka.topic_prefix, topic, option=option)


@contextlib.contextmanager
def quiet_kafka_logs() -> Iterator[None]:
    """aiokafka logs each failed connection attempt and metadata miss (on stderr, through
    logging's last-resort handler); inside this block the command reports the outcome in
    one line instead."""
    import logging

    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def unreachable_hint(config: HookstreamConfig, config_path: str) -> str:
    """What to check when Kafka does not answer, naming where its address came from (the
    environment variable overrides the file)."""
    import os

    from schemas.config_loader import BOOTSTRAP_ENV

    origin = (
        f"${BOOTSTRAP_ENV}"
        if os.environ.get(BOOTSTRAP_ENV)
        else f"kafka.bootstrap_servers in {config_path}"
    )
    return f"check that Kafka runs at {config.kafka.bootstrap_servers} (from {origin})"


def run(coro: Coroutine[Any, Any, int], args: argparse.Namespace, config: HookstreamConfig) -> int:
    """Run a command's coroutine; an expected failure becomes one line and an exit status."""
    import asyncio

    kafka = config.kafka
    try:
        with quiet_kafka_logs():
            return asyncio.run(coro)
    except UnknownTopic as exc:
        # The topic alone: the library's own hint (streams.client) would repeat the broker.
        where = f"topic {exc.topic!r} does not exist on the broker at {kafka.bootstrap_servers}"
        return fail(
            f"{where} — {missing_topic_hint(exc.topic, kafka.topic_prefix, args.config)}",
            EXIT_NO_TOPIC,
        )
    except ToolError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except BrokerUnavailable as exc:
        return fail(f"{exc} — {unreachable_hint(config, args.config)}", EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def missing_topic_hint(topic: str, prefix: str, config_path: str) -> str:
    """What to check for a topic that does not exist. Only hookstream's own topics under the
    configured prefix are created by the gateway (or the worker, for its memories); any other
    name is the operator's to check."""
    owned = owned_topics(prefix)
    if topic not in owned.values():
        return (
            f"check the name (hookstream's own topics are named {prefix}.<name>, "
            f"from kafka.topic_prefix in {config_path})"
        )
    worker = {owned["dedupe"], owned["ai-cache"]}
    maker = "the worker" if topic in worker else "the gateway"
    return (
        f"check kafka.topic_prefix in {config_path} (now {prefix!r}); "
        f"{maker} creates it when it first starts"
    )


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
    if not entries:
        return  # no table header either: stdout stays empty (the count goes to stderr)
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

    return run(main(), args, config)


def _add_dlq(commands: Any, load: Loader, config_arg: ConfigArg) -> None:
    text = "list, show and redrive dead letters"
    dlq = commands.add_parser("dlq", help=text, description=text)
    sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    for name, text in (
        ("list", "list dead letters"),
        ("redrive", "send dead letters back to their stage's input topic, once each"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        config_arg(p)
        p.add_argument("--stage", choices=STAGES, help="only the dead letters of this stage")
        p.add_argument("--error-class", help="only this error class, e.g. PermanentRemoteError")
        p.add_argument("--flow", help="only the dead letters of this flow")
        p.add_argument("--since", help="last failure at or after this ISO 8601 time")
        p.add_argument("--until", help="last failure before this ISO 8601 time")
        if name == "list":
            p.add_argument("--json", action="store_true", help="one JSON object per line")
        else:
            p.add_argument("--dry-run", action="store_true", help="only print what would go")
        p.set_defaults(func=lambda a: cmd_dlq(a, load))
    text = "one dead letter with its headers and value"
    show = sub.add_parser("show", help=text, description=text)
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
        self._open = False  # drawn, and its line not ended

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
        self._open = done < total
        if not self._open:
            self.stream.write("\n")
        self.stream.flush()

    def end_line(self) -> None:
        """End the bar's line, if drawn and unfinished, so that a line printed next starts
        on its own (a window's control records are never read: its bar may stop short)."""
        if self._open:
            self._open = False
            self.stream.write("\n")
            self.stream.flush()


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


_DATE_ONLY = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")
BOUND_FORMS = (
    "an offset (e.g. 1200, in every partition) or an ISO 8601 time with at least hours and "
    "minutes (e.g. 2026-12-01T09:30Z, 2026-12-01T09:30:00+01:00; no zone means UTC)"
)


def replay_bound(text: str, *, option: str) -> Position:
    """A replay bound (``--from``/``--to``): an offset or a time, never a bare date.

    A date alone used to mean midnight UTC, which once replayed a whole day; it is refused
    with the accepted forms (write ``2026-12-01T00:00Z`` to mean midnight).
    """
    from streams.kafka.reader import parse_position

    if _DATE_ONLY.match(text):
        raise ToolError(
            f"{option} {text!r} is a date without a time; give {BOUND_FORMS} "
            f"(for midnight UTC: {option} {text.strip()}T00:00Z)"
        )
    try:
        return parse_position(text, option=option)
    except ToolError:
        raise ToolError(f"{option} {text!r}: give {BOUND_FORMS}") from None


def replay_window(from_: str, to: str | None) -> tuple[Position, Position | None]:
    """``--from`` and ``--to``, refused when ``--from`` is not before ``--to`` (two offsets or
    two times; an offset and a time cannot be compared before the topic is read)."""
    start = replay_bound(from_, option="--from")
    end = replay_bound(to, option="--to") if to is not None else None
    # (kind, value): offsets and times compare only with their own kind.
    first = (isinstance(start, int), start if isinstance(start, int) else start.timestamp())
    last = None
    if end is not None:
        last = (isinstance(end, int), end if isinstance(end, int) else end.timestamp())
    order = -1  # > 0: --from after --to; 0: the same; < 0: before, or not comparable
    if last is not None and first[0] == last[0]:
        order = (first[1] > last[1]) - (first[1] < last[1])
    if order >= 0:
        raise ToolError(
            f"--from {from_!r} is {'later than' if order else 'the same as'} --to {to!r}: the "
            "window [--from, --to) is empty (--to is exclusive); swap them or widen the window"
        )
    return start, end


def cmd_replay(args: argparse.Namespace, load: Loader) -> int:
    with startup():
        from streams.ops.replay import Estimating, ModelEstimate, Replayer, ReplayFilter

        config = load(args.config)
    try:
        topic = topic_name(config, args.topic, option="--topic")
        if args.flow is not None and args.flow not in {flow.name for flow in config.flows}:
            raise ToolError(
                f"--flow {args.flow!r} is not a flow of {args.config}; its flows: "
                f"{', '.join(flow.name for flow in config.flows) or '(none)'}"
            )
        start, end = replay_window(args.from_, args.to)
        enriched = topic_name(config, "enriched", option="--topic")
        if args.batch and topic != enriched:
            raise ToolError(
                f"--batch answers the AI stage's input: replay --topic enriched ({enriched}), "
                f"not {topic}"
            )
    except ToolError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)

    bar: ProgressBar | None = None  # drawn by the copy

    def say(estimate: ModelEstimate) -> None:
        if bar is not None:  # with --yes the line comes after the copy's read
            bar.end_line()
        print(estimate.line(topic), file=sys.stderr, flush=True)

    async def main() -> int:
        import asyncio

        nonlocal bar
        replayer = Replayer(
            config,
            topic,
            start=start,
            end=end,
            selection=ReplayFilter(source=args.source, type=args.type, flow=args.flow),
        )
        if not args.batch and (args.yes or not replayer.calls_model):
            # The copy's clients connect while the estimate runs (nothing is written before
            # replayer.run): a fixed cost of every replay (bench/replay, issue 16). Not while
            # a question may wait for an answer, which could outlast idle connections.
            replayer.prepare()
        estimating: Estimating | None = None
        loading: asyncio.Future[None] | None = None
        try:
            if replayer.calls_model:
                # Printed with --yes too: the one line says what the replay is about to spend.
                from streams.cli.replay_cost import ReplayPricer

                pricer = ReplayPricer(config)
                # The answer cache is read while the estimate reads the window.
                loading = asyncio.ensure_future(pricer.load())
                if args.yes and not args.batch:
                    # Nobody is asked: the copy reads the window once and makes the estimate
                    # from the same reads; its line comes once the window has been read, while
                    # the last batches wait for their acks (bench/replay, issue 16).
                    estimating = Estimating(pricer, say, ready=loading)
                else:
                    estimate = await replayer.estimate(pricer, ready=loading)
                    await loading
                    say(estimate)
                    if estimate.total().calls and not args.yes and not _confirm("Replay?"):
                        print(
                            "replay: not confirmed (use --yes to skip the question)",
                            file=sys.stderr,
                        )
                        return EXIT_DECLINED
                    if args.batch:
                        from streams.cli.replay_batch_backend import run_batch_replay

                        return await run_batch_replay(config, args, topic, start, end, pricer.cache)
            bar = None if args.no_progress else ProgressBar()
            stats = await replayer.run(progress=bar, estimating=estimating)
        finally:
            if loading is not None and not loading.done():
                loading.cancel()
                await asyncio.gather(loading, return_exceptions=True)
            await replayer.close()
        refused = f", dead-lettered {stats.dead_lettered:,}" if stats.dead_lettered else ""
        print(
            f"replay {stats.replay_id}: window {stats.window:,}, read {stats.read:,}, "
            f"replayed {stats.replayed:,}, filtered out {stats.filtered_out:,}{refused} "
            f"in {stats.elapsed_s:.1f} s ({stats.events_per_s:,.0f} records/s)"
        )
        if stats.dead_lettered:
            print(
                f"replay: {stats.dead_lettered:,} record(s) would be over {topic}'s "
                "max.message.bytes with the replay header; they are on the DLQ "
                "(hookstream dlq list --stage replay): raise the topic's limit, then "
                "hookstream dlq redrive them",
                file=sys.stderr,
            )
        return 0

    return run(main(), args, config)


def _add_replay(commands: Any, load: Loader, config_arg: ConfigArg) -> None:
    text = "re-inject a window of a topic, marked as a replay"
    replay = commands.add_parser("replay", help=text, description=text)
    config_arg(replay)
    replay.add_argument(
        "--topic",
        required=True,
        help="short name (events, enriched, results, …) or full topic name",
    )
    replay.add_argument(
        "--from",
        dest="from_",
        required=True,
        help="first offset (every partition) or ISO time with hours and minutes "
        "(2026-12-01T09:30Z; a bare date is refused)",
    )
    replay.add_argument(
        "--to", help="end offset or ISO time, exclusive, after --from (default: now)"
    )
    replay.add_argument("--source", help="only events of this source")
    replay.add_argument("--type", help="only events of this type")
    replay.add_argument("--flow", help="only records of this flow (a configured one)")
    replay.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="do not ask before model calls (the cost estimate is still printed)",
    )
    replay.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    replay.add_argument(
        "--batch",
        action="store_true",
        help="answer the window's AI tasks through the providers' batch APIs (enriched topic; "
        "half price, answers within 24 h; docs/operations.md)",
    )
    replay.add_argument(
        "--batch-id",
        help="the batch replay's id, to resume it (default: one derived from the arguments, so "
        "the same command resumes)",
    )
    replay.add_argument(
        "--poll-s",
        type=non_negative_seconds,
        default=10.0,
        help="seconds between two looks at a batch job (default %(default)s)",
    )
    replay.set_defaults(func=lambda a: cmd_replay(a, load))


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--max``, ``--batch``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def non_negative_seconds(text: str) -> float:
    """An argparse type: a duration in seconds, 0 or more (``--wait-for-broker-s``)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, 0 or more")
    return value


def add_commands(commands: Any, load: Loader, config_arg: ConfigArg) -> None:
    """Add dlq and replay to the ``hookstream`` parser."""
    _add_dlq(commands, load, config_arg)
    _add_replay(commands, load, config_arg)
