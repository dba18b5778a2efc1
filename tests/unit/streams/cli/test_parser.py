"""The ``hookstream`` parser as a user meets it: --version, -c everywhere, help for everything,
bad choices refused with the list of good ones."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib.metadata import version

import pytest

from streams.cli.main import build_parser, main
from streams.cli.ops import STAGES

# The commands that read no config: they need no -c.
WITHOUT_CONFIG = {("schemas", "export"), ("dev",)}


def leaves(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable (sub)command with its words, e.g. (("dlq", "list"), parser)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield words, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from leaves(sub, (*words, name))


def all_parsers(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_parsers(sub, (*words, name))


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"hookstream {version('hookstream')}\n"


def test_every_command_that_reads_the_config_takes_dash_c() -> None:
    commands = dict(leaves(build_parser()))
    assert ("config", "check") in commands
    assert ("tail",) in commands
    for words, parser in commands.items():
        if words in WITHOUT_CONFIG:
            continue
        options = {o for a in parser._actions for o in a.option_strings if a.dest == "config"}
        assert options == {"-c", "--config"}, words


def test_config_check_takes_the_file_with_dash_c_or_as_before_positionally() -> None:
    parser = build_parser()
    assert parser.parse_args(["config", "check", "-c", "x.yaml"]).config == "x.yaml"
    assert parser.parse_args(["config", "check", "y.yaml"]).file == "y.yaml"


def test_every_option_argument_and_subcommand_has_help_text() -> None:
    missing = []
    for words, parser in all_parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [
                    (*words, choice.dest) for choice in action._choices_actions if not choice.help
                ]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append((*words, action.dest))
        if words and not parser.description:
            missing.append((*words, "(description)"))
    assert missing == []


@pytest.mark.parametrize("command", ["list", "redrive"])
def test_dlq_refuses_an_unknown_stage_and_names_the_stages(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["dlq", command, "--stage", "bogus"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err
    for stage in ("enrich", "ai", "sink"):
        assert f"'{stage}'" in err
    assert build_parser().parse_args(["dlq", command, "--stage", "ai"]).stage == "ai"


def test_the_stage_list_is_the_stages_that_dead_letter() -> None:
    from agents.ai.provider import STAGE as AI
    from agents.outbound.lookups import STAGE as ENRICH
    from agents.sinks.base import STAGE as SINK
    from streams.ops.replay import STAGE as REPLAY

    assert set(STAGES) == {ENRICH, AI, SINK, REPLAY}


@pytest.mark.parametrize(
    "args", [["tail", "events", "--max", "0"], ["publish", "--source", "s", "--batch", "-1"]]
)
def test_counts_below_one_are_refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(args)
    assert stopped.value.code == 2
    assert "is not a whole number of at least 1" in capsys.readouterr().err
