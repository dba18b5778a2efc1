"""``hookstream trace EVENT_ID``: the journey of one event, read from Kafka (streams.ops.trace).

Text: a title, one line per hop (time, +latency from the previous hop, topic[partition]@offset,
kind, summary) and the line saying what was searched; ``--json``: the same as one JSON object.
An event with no record in the window is one line on stderr saying what was searched, and exit
status 6 (:data:`streams.cli.exits.EXIT_NOT_FOUND`), so a script can tell "not there" from
"Kafka down" (3) and "no such topic" (4).
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

import orjson

from schemas.errors import ToolError
from streams.cli.exits import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK, fail
from streams.cli.ops import ConfigArg, Loader, run, startup

DESCRIPTION = (
    "Print the journey of one event, read from Kafka alone (any number of workers): its events "
    "record, enriched records, each AI result (model, tokens, cost, latency), the sinks' "
    "receipts, dead letters, redrives and replays, with their times and the latency between "
    "hops. Knowing the partition key (--key, or from the events record) limits the other "
    "topics to one partition each."
)
_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400}
SINCE_FORMS = "a duration back from now (30m, 12h, 7d) or an ISO 8601 time (2026-12-01T09:30Z)"


def since_ms(text: str, *, now_s: float | None = None) -> int:
    """``--since``: a duration back from now (``90s``, ``30m``, ``12h``, ``7d``) or an ISO 8601
    time (UTC when it has no zone), as epoch milliseconds."""
    from streams.kafka.reader import parse_time

    ago = _AGO.match(text)
    if ago:
        now = time.time() if now_s is None else now_s
        return int((now - float(ago.group(1)) * _UNIT_S[ago.group(2)]) * 1000)
    try:
        return int(parse_time(text, option="--since").timestamp() * 1000)
    except ToolError:
        raise ToolError(f"--since {text!r}: give {SINCE_FORMS}") from None


def not_found_line(journey: Any) -> str:
    """The one line for an event with no record: which event, and what was searched."""
    who = f"{journey.source}/{journey.event_id}" if journey.source else journey.event_id
    return (
        f"no record of event {who} — {journey.searched_text()}; check the id (and --source), "
        "or search further back with --since"
    )


def cmd_trace(args: argparse.Namespace, load: Loader) -> int:
    with startup():
        from streams.ops.trace import find_journey, journey_lines

        config = load(args.config)
    try:
        since = since_ms(args.since)
        if args.event_id is None and args.webhook_id is None:
            raise ToolError("give the event's id (EVENT_ID), or --source and --webhook-id")
    except ToolError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)

    async def main() -> int:
        journey = await find_journey(
            config.kafka,
            event_id=args.event_id,
            source=args.source,
            webhook_id=args.webhook_id,
            key=args.key,
            since_ms=since,
        )
        if args.json:
            print(orjson.dumps(journey.as_json()).decode())
        if not journey.found:
            return fail(not_found_line(journey), EXIT_NOT_FOUND)
        if not args.json:
            print("\n".join(journey_lines(journey)))
        return EXIT_OK

    return run(main(), args, config)


def add_command(commands: Any, load: Loader, config_arg: ConfigArg) -> None:
    """Add ``trace`` to the ``hookstream`` parser."""
    trace = commands.add_parser(
        "trace", help="print the journey of one event, read from Kafka", description=DESCRIPTION
    )
    config_arg(trace)
    trace.add_argument(
        "event_id",
        nargs="?",
        metavar="EVENT_ID",
        help="the event's id (the webhook id, as `dlq show` and `tail` print it)",
    )
    trace.add_argument("--source", help="the source that received it (when several use the id)")
    trace.add_argument("--webhook-id", help="the sender's webhook id (with --source): EVENT_ID")
    trace.add_argument(
        "--key", help="the event's partition key: read only its partition of every topic"
    )
    trace.add_argument(
        "--since",
        default="7d",
        help=f"search from this point on: {SINCE_FORMS} (default 7d)",
    )
    trace.add_argument("--json", action="store_true", help="one JSON object, hops included")
    trace.set_defaults(func=lambda a: cmd_trace(a, load))
