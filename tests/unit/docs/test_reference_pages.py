"""The generated reference pages hold everything they are generated from.

Each test enumerates the source on its own (the config models, the argument parser, the
problem codes, the metric objects) and looks for every item on the page the hook builds, so a
generator that silently drops a field, a subcommand, an option, a code or a metric fails here,
not in a reader's hands. ``make docs`` (mkdocs --strict, in CI) checks the links and the nav.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel

import schemas
import schemas.config
import streams
from schemas.config_base import ConfigModel
from streams.cli.main import build_parser
from streams.gateway.openapi import PROBLEM_CODES
from streams.metrics.event_loop import LoopCounter, LoopHistogram

ROOT = Path(__file__).resolve().parents[3]
HOOK = ROOT / "docs" / "hooks" / "reference_pages.py"


@pytest.fixture(scope="module")
def pages() -> ModuleType:
    """The hook module, loaded from its file as mkdocs loads it."""
    spec = importlib.util.spec_from_file_location("reference_pages", HOOK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _section(page: str, heading: str) -> str:
    """The text from ``heading`` to the next heading of any level."""
    start = page.index(heading)
    rest = page[start + len(heading) :]
    ends = [i for i in (rest.find("\n## "), rest.find("\n### "), rest.find("\n#### ")) if i >= 0]
    return rest[: min(ends)] if ends else rest


# --- config -------------------------------------------------------------------------------------


def _config_modules() -> list[ModuleType]:
    """schemas/config.py and every schemas/config_*.py: found by name, so a model put in a new
    config module is held to the same check without this test being told."""
    return [
        importlib.import_module(f"schemas.{info.name}")
        for info in pkgutil.iter_modules(schemas.__path__)
        if info.name == "config" or info.name.startswith("config_")
    ]


def _config_models() -> set[type[BaseModel]]:
    """Every public model class defined in the config modules, except the shared base (which
    no block of the file is)."""
    return {
        value
        for module in _config_modules()
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, BaseModel)
        and value.__module__ == module.__name__
        and value is not ConfigModel
        and not name.startswith("_")
    }


def test_config_reference_has_a_section_for_every_model(pages: ModuleType) -> None:
    sections = pages.config_sections()
    assert {s.model for s in sections} == _config_models()


def test_config_reference_lists_every_field_with_its_default(pages: ModuleType) -> None:
    page: str = pages.config_reference()
    for section in pages.config_sections():
        text = _section(page, f"## `{section.title}`")
        model: type[BaseModel] = section.model
        settable = [n for n, f in model.model_fields.items() if not f.exclude]
        assert settable, model
        for name in settable:
            assert f"| `{name}` |" in text, f"{section.title}: field {name} missing"
        for name, field in model.model_fields.items():
            if field.exclude:  # secrets resolved from *_env, refused in the file
                assert f"| `{name}` |" not in text
            elif field.is_required():
                row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
                assert "**required**" in row


def test_config_reference_describes_every_field(pages: ModuleType) -> None:
    """The description column is filled on every row (the models' own check is
    tests/unit/schemas/test_config_descriptions.py; this one holds the generator to it)."""
    page: str = pages.config_reference()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(rows) > 130
    empty = [row for row in rows if row.rstrip().endswith("|  |") or row.endswith("| |")]
    assert not empty, f"rows without a description: {empty}"
    kafka = _section(page, "## `kafka`")
    row = next(line for line in kafka.splitlines() if line.startswith("| `bootstrap_servers` |"))
    assert "KAFKA_BOOTSTRAP_SERVERS" in row
    # "<prefix>.events" outside a code span would be an (invisible) HTML tag.
    prose = [part for row in rows for part in row.split("`")[::2]]
    assert not [part for part in prose if "<" in part], "unescaped < in a row"
    assert "&lt;prefix&gt;.events" in _section(page, "## `kafka`")


def test_config_reference_shows_defaults_and_bounds(pages: ModuleType) -> None:
    gateway = _section(pages.config_reference(), "## `gateway`")
    row = next(line for line in gateway.splitlines() if line.startswith("| `max_body_bytes` |"))
    default = schemas.config.GatewaySettings.model_fields["max_body_bytes"].default
    assert f"`{default}`" in row
    assert "≥ 1" in row


# --- CLI ------------------------------------------------------------------------------------------


def _commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(words, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*words, name))
    return found


def test_cli_reference_lists_every_subcommand_and_option(pages: ModuleType) -> None:
    page: str = pages.cli_reference()
    commands = _commands(build_parser())
    assert len(commands) > 10
    for words, parser in commands:
        title = " ".join(("hookstream", *words))
        heading = next(
            line for line in page.splitlines() if line.startswith("#") and f"`{title}`" in line
        )
        text = _section(page, heading)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if action.help == argparse.SUPPRESS:
                continue
            for option in action.option_strings:
                assert f"`{option}" in text, f"{title}: option {option} missing"
            if not action.option_strings:
                assert f"`{action.metavar or action.dest}`" in text, f"{title}: {action.dest}"
            if action.help and "%" not in action.help:
                assert " ".join(action.help.split()) in text, f"{title}: help of {action.dest}"


_DEFAULT_WORD = re.compile(r"\bdefault", re.IGNORECASE)


def test_cli_reference_states_each_default_once(pages: ModuleType) -> None:
    page: str = pages.cli_reference()
    rows = [line for line in page.splitlines() if line.startswith("| `-")]
    assert len(rows) > 30
    twice = [row for row in rows if len(_DEFAULT_WORD.findall(row)) > 1]
    assert not twice, f"option rows stating their default twice: {twice}"


def test_cli_reference_adds_a_default_only_when_the_help_has_none(pages: ModuleType) -> None:
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--said", type=float, default=60.0, help="wait this long (default 60)")
    parser.add_argument("--expanded", default=7, help="retries, %(default)s unless given")
    parser.add_argument("--defaults-to", default="x", help="the name; defaults to x")
    parser.add_argument("--unsaid", default=3, help="batch size")
    parser.add_argument("--none", default=None, help="an optional name")
    rows = {
        action.dest: pages._argument_row(action, "demo")
        for action in parser._actions
        if action.option_strings != ["-h", "--help"]
    }
    assert rows["said"].endswith("| wait this long (default 60) |")
    assert rows["expanded"].endswith("| retries, 7 unless given |")
    assert rows["defaults_to"].endswith("| the name; defaults to x |")
    assert rows["unsaid"].endswith("| batch size; default `3` |")
    assert rows["none"].endswith("| an optional name |")


def test_cli_reference_does_not_leak_the_builders_environment(
    pages: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOKSTREAM_CONFIG", "/secret/place/flows.yaml")
    monkeypatch.setenv("HOOKSTREAM_METRICS_PORT", "12345")
    page: str = pages.cli_reference()
    assert "/secret/place" not in page
    assert "12345" not in page


# --- problem codes --------------------------------------------------------------------------------


def test_problem_reference_lists_every_code_with_its_status(pages: ModuleType) -> None:
    page: str = pages.problems_reference()
    lines = page.splitlines()
    for status, codes in PROBLEM_CODES.items():
        for code in codes:
            in_a_row = any(
                line.startswith(f"| {status} |") and f"`{code}`" in line for line in lines
            )
            assert in_a_row or f"`{code}` ({status})" in page, f"{status} {code} missing"


# --- metrics --------------------------------------------------------------------------------------


def _metric_objects() -> dict[str, Any]:
    """Every metric object held by a module of agents or streams, by its family name."""
    found: dict[str, Any] = {}
    for package_name in ("agents", "streams"):
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if isinstance(value, MetricWrapperBase):
                    found[value._name] = value
                elif isinstance(value, LoopCounter | LoopHistogram):
                    found[value.name] = value
    return found


def test_metrics_reference_lists_every_metric_with_its_labels(pages: ModuleType) -> None:
    page: str = pages.metrics_reference()
    objects = _metric_objects()
    assert len(objects) >= 20
    rows = page.splitlines()
    for name, metric in objects.items():
        row = next((r for r in rows if r.startswith(f"| `{name}")), None)
        assert row is not None, f"metric {name} missing"
        labels: tuple[str, ...] = tuple(
            getattr(metric, "_labelnames", None) or getattr(metric, "labelnames", None) or ()
        )
        for label in labels:
            assert f"`{label}`" in row, f"{name}: label {label} missing"


# --- the public API page --------------------------------------------------------------------------


def test_client_page_names_every_public_name() -> None:
    page = (ROOT / "docs" / "client.md").read_text(encoding="utf-8")
    for name in streams.__all__:
        assert f"`{name}`" in page, f"docs/client.md does not mention {name}"


# --- tests the manual names -----------------------------------------------------------------------

TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def test_every_test_the_manual_names_exists() -> None:
    named = [
        (page.name, path, name)
        for page in sorted((ROOT / "docs").rglob("*.md"))
        for path, name in TEST_REFERENCE.findall(page.read_text(encoding="utf-8"))
    ]
    assert len(named) >= 20  # docs/guarantees.md names its tests
    for page, path, name in named:
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^(async )?def {name}\(", source, re.MULTILINE), (
            f"docs/{page} names {path}::{name}, which does not exist"
        )


def test_the_quickstart_page_shows_every_command_the_readme_test_runs(pages: ModuleType) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```\w+ readme:[\w-]+\n(.*?)^```$", readme, flags=re.MULTILINE | re.S)
    assert blocks, "the README has no tagged blocks"
    page = pages.readme_quickstart()
    for block in blocks:
        assert block in page
    assert "readme:" not in page
    assert "](docs/" not in page
