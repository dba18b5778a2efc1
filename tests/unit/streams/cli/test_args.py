"""The values the ``hookstream`` parser refuses before a command starts: ports, durations, URLs,
a bad port in ``$HOOKSTREAM_METRICS_PORT`` (only for the commands that read it), and ``dev``
without a simulator; and the lines of the operator commands that concern what they print."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from streams.cli import exits
from streams.cli.main import build_parser, main
from streams.cli.ops import _print_entries, missing_topic_hint
from streams.dev import _simcommon, ai_sim, crm_sim, slack_sim
from tests.unit.streams.cli.test_parser import all_parsers

SIM_PARSERS = {
    "ai-sim": ai_sim.build_parser,
    "crm-sim": crm_sim.build_parser,
    "slack-sim": slack_sim.build_parser,
}


def port_options() -> Iterator[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    """Every option of the command and of the simulators that takes a port."""
    parsers = [(" ".join(words), parser) for words, parser in all_parsers(build_parser())]
    parsers += [(f"dev {name}", make()) for name, make in SIM_PARSERS.items()]
    for words, parser in parsers:
        for action in parser._actions:
            if action.dest.endswith("port") and action.option_strings:
                yield words, parser, action


def refusal(
    parser: argparse.ArgumentParser, args: list[str], capsys: pytest.CaptureFixture[str]
) -> str:
    """The error line argparse printed when it refused ``args`` with exit 2."""
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(args)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_every_port_option_takes_a_port_number() -> None:
    found = {(words, action.option_strings[-1]) for words, _, action in port_options()}
    assert found == {
        ("gateway", "--port"),
        ("console", "--port"),
        ("worker", "--metrics-port"),
        ("sinks", "--metrics-port"),
        ("batcher", "--metrics-port"),
        ("dev ai-sim", "--port"),
        ("dev crm-sim", "--port"),
        ("dev slack-sim", "--port"),
    }
    for words, _, action in port_options():
        assert getattr(action.type, "__name__", None) == "port", words


@pytest.mark.parametrize("given", ["99999", "65536", "-1", "abc", "8080.5", ""])
def test_a_port_out_of_range_is_refused_naming_the_option(
    given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for words, parser, action in port_options():
        option = action.option_strings[-1]
        line = refusal(parser, [f"{option}={given}"], capsys)  # the command's own parser
        assert f"error: argument {option}: {given!r} is not a port number from " in line, words


def test_the_edges_of_the_range() -> None:
    parser = build_parser()
    assert parser.parse_args(["gateway", "--port", "65535"]).port == 65535
    assert parser.parse_args(["gateway", "--port", "0"]).port == 0  # any free port
    assert parser.parse_args(["worker", "--metrics-port", "1"]).metrics_port == 1
    for name, make in SIM_PARSERS.items():
        assert make().parse_args(["--port", "0"]).port == 0, name


@pytest.mark.parametrize("role", ["worker", "sinks"])
def test_a_metrics_port_of_0_is_refused(role: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Prometheus has to be told the port: "any free port" would serve where nobody looks."""
    line = refusal(build_parser(), [role, "--metrics-port", "0"], capsys)
    assert "argument --metrics-port: '0' is not a port number from 1 to 65535" in line


def test_a_bad_metrics_port_variable_fails_only_the_commands_that_read_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOOKSTREAM_METRICS_PORT", "abc")
    parser = build_parser()  # int() of the variable here raised ValueError for every command
    assert parser.parse_args(["tail", "events"]).topic == "events"
    assert parser.parse_args(["worker", "--metrics-port", "9464"]).metrics_port == 9464
    line = refusal(parser, ["worker"], capsys)
    assert "argument --metrics-port: $HOOKSTREAM_METRICS_PORT='abc' is not a port number" in line
    monkeypatch.setenv("HOOKSTREAM_METRICS_PORT", "9464")
    assert build_parser().parse_args(["sinks"]).metrics_port == 9464
    monkeypatch.setenv("HOOKSTREAM_METRICS_PORT", "")
    assert build_parser().parse_args(["sinks"]).metrics_port is None


@pytest.mark.parametrize("given", ["-3", "-0.1", "nan", "inf", "soon"])
def test_a_negative_wait_for_the_broker_is_refused(
    given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refusal(build_parser(), ["worker", f"--wait-for-broker-s={given}"], capsys)
    assert f"argument --wait-for-broker-s: {given!r} is not a number of seconds, 0 or more" in line
    assert build_parser().parse_args(["worker", "--wait-for-broker-s", "0"]).wait_for_broker_s == 0


@pytest.mark.parametrize("url", ["ftp://x", "file:///etc/passwd", "127.0.0.1:8080", "http://"])
def test_sign_takes_only_an_http_url_with_a_host(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refusal(build_parser(), ["sign", "--source", "s", "f", "--url", url], capsys)
    assert f"argument --url: {url!r} is not an http:// or https:// URL with a host" in line
    for good in ("http://127.0.0.1:8080", "https://hooks.example.com/base"):
        assert build_parser().parse_args(["sign", "--source", "s", "f", "--url", good]).url == good


def test_dev_without_a_simulator_names_only_it_and_lists_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["dev"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "sim_args" not in err
    assert err.splitlines()[-1] == (
        "hookstream dev: error: give the simulator to run: one of ai-sim, crm-sim, slack-sim"
    )
    args = build_parser().parse_args(["dev", "crm-sim", "--port", "0", "--seed", "3"])
    assert (args.simulator, args.sim_args) == ("crm-sim", ["--port", "0", "--seed", "3"])


def test_a_simulators_bad_setting_is_one_line_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        ai_sim.main(["--rate-500", "2"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "errors.pydantic.dev" not in err
    assert err.splitlines()[-1] == (
        "hookstream dev ai-sim: error: argument --rate-500: Input should be less than or equal "
        "to 1 (got 2.0)"
    )


def test_the_simulators_exit_statuses_are_the_commands() -> None:
    assert _simcommon.EXIT_BAD_INPUT == exits.EXIT_BAD_INPUT
    assert _simcommon.EXIT_CANNOT_LISTEN == exits.EXIT_CANNOT_LISTEN


def test_only_hookstreams_own_topics_are_said_to_be_created_by_it() -> None:
    owned = missing_topic_hint("p.events", "p", "f.yaml")
    assert owned == (
        "check kafka.topic_prefix in f.yaml (now 'p'); the gateway creates it when it first starts"
    )
    assert "the worker creates it" in missing_topic_hint("p.dedupe", "p", "f.yaml")
    for other in ("orders.v1", "q.events"):  # someone else's, or under another prefix
        hint = missing_topic_hint(other, "p", "f.yaml")
        assert "creates it" not in hint
        assert hint == (
            "check the name (hookstream's own topics are named p.<name>, from "
            "kafka.topic_prefix in f.yaml)"
        )


@pytest.mark.parametrize("as_json", [False, True])
def test_an_empty_dlq_list_prints_nothing_on_stdout(
    as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    _print_entries([], as_json)
    assert capsys.readouterr().out == ""
