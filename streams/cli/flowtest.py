"""``hookstream flow test``: what the flows would do with one webhook, or a YAML test suite.

Without Kafka (the config's brokers are never contacted) and without secrets unless a real call
is asked for. One event (``--source S EVENT.json``) prints which flows match it and why the
others do not, each lookup's URL, the prompt and the model request's parameters, the validated
answer and each sink's request or row (:mod:`streams.cli.flowtest_run` runs the worker's own
code for each step); ``--json`` prints the same as one object. ``--all`` runs the tests file
(:mod:`streams.cli.flowtest_suite`), one line per test, and exits 7 when one fails, so it fits
in a CI job as ``rpk connect test`` does.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from schemas.errors import ToolError
from streams.cli.exits import EXIT_BAD_INPUT, EXIT_OK, EXIT_TEST_FAILED, EXIT_UNAVAILABLE, fail
from streams.cli.ops import ConfigArg, Loader, startup

if TYPE_CHECKING:
    from schemas.config import HookstreamConfig
    from streams.cli.flowtest_run import FlowInput

DESCRIPTION = (
    "Show what the flows would do with one webhook, without Kafka: which flows match (and why "
    "the others do not), the lookup URLs, the prompt and model request, the validated answer, "
    "and the sink requests and rows that would be sent. With --all, run the YAML tests beside "
    "the flows file and exit 7 when one fails."
)
_INDENT = "    "


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise ToolError(f"{option} {value!r}: give NAME=VALUE")
        found[name] = rest
    return found


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(f"--time {text!r}: give an ISO 8601 time (2026-12-01T09:30:00Z)") from None


def _check_call_model(config: HookstreamConfig) -> None:
    """A real call needs the key the worker would send: refused up front, naming its variable."""
    from schemas.config_base import secret_origin

    for provider in config.providers:
        if (provider.api_key_env or provider.api_key_file) and provider.api_key is None:
            origin = secret_origin(provider, "api_key")
            raise ToolError(f"--call-model: provider {provider.name}'s API key ({origin}) is unset")


def one_input(args: argparse.Namespace, config: HookstreamConfig) -> FlowInput:
    """The run the command line describes."""
    from streams.cli.flowtest_run import FlowInput
    from streams.cli.flowtest_suite import read_json_file

    if args.event is None or args.source is None:
        raise ToolError("give --source SOURCE and the webhook body EVENT.json (or --all)")
    if args.answer and args.call_model:
        raise ToolError("give --answer FILE or --call-model, not both")
    if args.call_model:
        _check_call_model(config)
    body, payload = read_json_file(Path(args.event), what="EVENT")
    lookups = {
        name: read_json_file(Path(file), what=f"--lookup {name}")[1]
        for name, file in _pairs(args.lookup, "--lookup").items()
    }
    answers = []
    for file in args.answer or []:
        try:
            answers.append(Path(file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ToolError(f"--answer {file}: cannot read it: {exc.strerror}") from None
    return FlowInput(
        source=args.source,
        body=body,
        payload=payload,
        headers=_pairs(args.header, "--header"),
        received_at=_time(args.time),
        lookups=lookups,
        answers=answers,
        answers_from=", ".join(args.answer or []),
        call_model=args.call_model,
        call_lookups=args.call_lookups,
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _dead_letter_line(letter: dict[str, str]) -> str:
    return f"dead letter (stage {letter['stage']}): {letter['error_class']}: {letter['message']}"


def _model_lines(model: dict[str, Any]) -> list[str]:
    payload = model.get("payload") or {}
    shape = (payload.get("response_format") or {}).get("type", "in the system prompt")
    lines = [
        f"model {model['provider']}/{model['model']}: POST {model['url']}",
        f"{_INDENT}parameters: temperature {model['temperature']}, max_tokens "
        f"{model['max_tokens']}, output schema {shape}",
    ]
    if model["fallbacks"]:
        lines.append(f"{_INDENT}fallbacks: {', '.join(model['fallbacks'])}")
    for part in ("system", "prompt"):  # a multi-line prompt keeps its lines, indented
        text = model[part].replace("\n", "\n" + _INDENT * 3)
        lines.append(f"{_INDENT}{part}: {text}")
    return lines


def _sink_lines(name: str, sink: dict[str, Any]) -> list[str]:
    if "skipped" in sink:
        return [f"sink {name} ({sink['kind']}): skipped, {sink['skipped']}"]
    if "dead_letter" in sink:
        return [f"sink {name} ({sink['kind']}): {_dead_letter_line(sink['dead_letter'])}"]
    if sink["kind"] == "postgres":
        keys = ", ".join(sink["key"])
        return [
            f"sink {name} (postgres): upsert into {sink['table']} (key {keys})",
            f"{_INDENT}row: {_json(sink['row'])}",
        ]
    lines = [f"sink {name} ({sink['kind']}): {sink['method']} {sink['url']}"]
    lines += [f"{_INDENT}{header}: {value}" for header, value in sink["headers"].items()]
    lines.append(f"{_INDENT}body: {_json(sink['body'])}")
    return lines


def _flow_lines(flow: dict[str, Any]) -> list[str]:
    lines = []
    for name, lookup in flow["lookups"].items():
        told = lookup["answer"]
        answer = f"{told}: {_json(lookup['value'])}" if told != "not called" else "not called: null"
        if "table" in lookup:  # a table lookup: read from Kafka by the worker, never here
            target = f"table {lookup['table']} key {lookup['key']}"
        else:
            target = f"GET {lookup['url']}"
        lines.append(f"lookup {name}: {target} ({answer})")
    for step, part in (flow.get("steps") or {}).items():
        lines.append(f"step {step}:")
        lines += [f"{_INDENT}{line}" for line in _answer_lines(part)]
    lines += _answer_lines(flow)
    for name, sink in (flow.get("sinks") or {}).items():
        lines += _sink_lines(name, sink)
    return lines


def _answer_lines(flow: dict[str, Any]) -> list[str]:
    """The model request and its answer (or why there is none) of an AI task."""
    lines = []
    if flow["model"] is not None:
        lines += _model_lines(flow["model"])
    answered = flow.get("answer")
    if answered is not None and answered["from"] == "output":
        lines.append(f"output (no AI step, no model call): {_json(answered['output'])}")
    elif answered is not None:
        how = " after a re-ask" if answered["reasked"] else ""
        lines.append(f"answer ({answered['from']}), valid{how}: {_json(answered['output'])}")
    elif flow["model"] is not None and flow["dead_letter"] is None:
        lines.append("answer: none (give --answer FILE or --call-model to see the sinks)")
    if flow["dead_letter"] is not None and not flow.get("steps"):
        lines.append(_dead_letter_line(flow["dead_letter"]))
    return lines


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as text: the event, then each flow (matching ones with every step)."""
    event = report["event"]
    lines = [
        f"event {event['source']}/{event['id']} type {event['type']} key {event['partitionkey']}"
    ]
    for name, flow in report["flows"].items():
        if not flow["matched"]:
            lines.append(f"flow {name}: no match ({flow['why_not']})")
            continue
        lines.append(f"flow {name}: matches")
        lines += [f"{_INDENT}{line}" for line in _flow_lines(flow)]
    if not report["matched"]:
        lines.append("no flow matches: the worker would drop this event")
    return lines


async def _with_timeout(coroutine: Any, timeout_s: float) -> Any:
    import asyncio  # here: `hookstream --help` need not import asyncio (issue 16)

    try:
        async with asyncio.timeout(timeout_s):
            return await coroutine
    except TimeoutError:
        raise TimeoutError(
            f"no answer within {timeout_s:g} s (--timeout-s): the model or a lookup is down "
            "or slow; the worker would wait for it, pausing the flow"
        ) from None


def cmd_flow_test(args: argparse.Namespace, load: Loader) -> int:
    import asyncio

    with startup():
        from streams.cli.flowtest_run import FlowTester
        from streams.cli.flowtest_suite import default_tests_path, load_tests, run_tests

        config = load(args.config)

    async def one() -> int:
        async with FlowTester(config) as tester:
            report = await _with_timeout(tester.run(one_input(args, config)), args.timeout_s)
        print(_json(report) if args.json else "\n".join(report_lines(report)))
        return EXIT_OK

    async def suite() -> int:
        path = Path(args.tests) if args.tests else default_tests_path(args.config)
        tests = load_tests(path)
        async with FlowTester(config) as tester:
            outcomes = await run_tests(tester, tests, path.parent)
        failed = sum(1 for _, found in outcomes if found)
        if args.json:
            rows = [{"name": t.name, "passed": not d, "differences": d} for t, d in outcomes]
            print(_json({"tests": rows, "passed": len(outcomes) - failed, "failed": failed}))
        else:
            for test, found in outcomes:
                print(f"{'FAIL' if found else 'PASS'}  {test.name}")
                print("\n".join(f"{_INDENT}{line}" for line in found), end="\n" if found else "")
            print(f"{len(outcomes) - failed} passed, {failed} failed ({path})")
        return EXIT_TEST_FAILED if failed else EXIT_OK

    run_suite = args.all or args.tests is not None
    try:
        if run_suite and (args.event is not None or args.source is not None):
            raise ToolError("--all runs the tests file: give no EVENT.json or --source with it")
        return asyncio.run(suite() if run_suite else one())
    except ToolError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except TimeoutError as exc:
        return fail(str(exc), EXIT_UNAVAILABLE)


def add_command(commands: Any, load: Loader, config_arg: ConfigArg) -> None:
    """Add ``flow test`` to the ``hookstream`` parser."""
    flow = commands.add_parser("flow", help="work with the flows", description="Test the flows.")
    flow_commands = flow.add_subparsers(dest="flow_command", required=True, metavar="COMMAND")
    test = flow_commands.add_parser(
        "test",
        help="show what the flows do with a webhook, or run the flow tests",
        description=DESCRIPTION,
    )
    config_arg(test)
    test.add_argument("event", nargs="?", metavar="EVENT.json", help="the webhook body, as sent")
    test.add_argument("--source", help="the source that receives it (its name in sources)")
    test.add_argument(
        "--header",
        action="append",
        metavar="NAME=VALUE",
        help="a request header (the id or type header of the source); repeatable",
    )
    test.add_argument("--time", help="when the gateway received it, ISO 8601 (default: now)")
    test.add_argument(
        "--answer",
        action="append",
        metavar="FILE",
        help="the model's answer (its text, JSON; a multi-step flow: a JSON mapping of step "
        "name to that step's answer); a second --answer answers the re-ask",
    )
    test.add_argument(
        "--call-model",
        action="store_true",
        help="call the flow's provider for real (its API key from the environment)",
    )
    test.add_argument(
        "--lookup",
        action="append",
        metavar="NAME=FILE",
        help="the JSON answer of the lookup NAME; repeatable (others: not called, null)",
    )
    test.add_argument(
        "--call-lookups",
        action="store_true",
        help="GET the lookups not given by --lookup for real (once, no retries)",
    )
    test.add_argument(
        "--timeout-s",
        type=float,
        default=60.0,
        help="the longest the real calls may take in all, in seconds (default 60)",
    )
    test.add_argument("--json", action="store_true", help="print the report as one JSON object")
    test.add_argument("--all", action="store_true", help="run the tests file instead")
    test.add_argument(
        "--tests",
        metavar="FILE",
        help="the tests file to run (implies --all; default: NAME.tests.yaml beside NAME.yaml)",
    )
    test.set_defaults(func=lambda a: cmd_flow_test(a, load))
