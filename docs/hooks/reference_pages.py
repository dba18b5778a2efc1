"""The manual's reference pages, generated from the code at every ``mkdocs build``.

Why generated: a hand-written reference drifts from the code the day a field, an option, a
problem code or a metric is added. These pages are built from the things themselves, so they
cannot:

- ``reference/config.md`` from the pydantic models reachable from
  :class:`schemas.config.HookstreamConfig` (every field, its type, constraints, default and
  description, nested models included);
- ``reference/cli.md`` from the argument parser of :func:`streams.cli.main.build_parser`
  (every subcommand and option with its help), plus the simulators' own parsers;
- ``reference/problems.md`` from the gateway's OpenAPI document
  (:func:`streams.gateway.openapi.build_openapi`): every problem code, its status and meaning;
- ``reference/metrics.md`` from the Prometheus registry, after importing every module of
  ``agents`` and ``streams`` (a metric declared anywhere is listed);
- ``benchmarks/<name>.md``: each ``bench/results/*.md`` as the benchmarks wrote it.

mkdocs loads this file through ``hooks:`` in ``mkdocs.yml``; ``on_files`` adds the pages
(none is written to ``docs/``) and ``on_config`` lists the benchmark results in the nav.
``tests/unit/docs`` imports the generator functions and checks that every field, subcommand,
option, problem code and metric is on its page, so a generator that drops one fails.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import os
import pkgutil
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "bench" / "results"
BENCH_NAV_TITLE = "Benchmarks"
GENERATED_NOTE = (
    "!!! note\n    This page is generated from the code when the manual is built "
    "(`docs/hooks/reference_pages.py`); it always matches the version it was built from.\n"
)


# --- helpers ----------------------------------------------------------------------------------


def cell(text: str) -> str:
    """Text fit for one Markdown table cell: one line, pipes escaped, and ``<``/``>`` outside
    code spans escaped (Markdown would pass ``<prefix>.events`` through as an HTML tag, and the
    browser would show nothing of it)."""
    parts = " ".join(text.split()).replace("|", "\\|").split("`")
    parts[::2] = [p.replace("<", "&lt;").replace(">", "&gt;") for p in parts[::2]]
    return "`".join(parts)


def rst_to_md(text: str) -> str:
    """Docstring markup (reST roles and double backticks) as Markdown."""
    text = re.sub(r":(?:mod|class|func|meth|data|attr):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def slug(text: str) -> str:
    """An anchor id: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "top"


def own_doc(obj: type) -> str:
    """The class's own docstring (``inspect.getdoc`` would return BaseModel's for a model
    without one)."""
    doc = obj.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


# --- config reference -------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigSection:
    """One model of the config file, at the YAML path where it appears."""

    path: str  # e.g. "flows[].sinks[]"; "" for the file's top level
    kind: str | None  # the discriminating tag (sinks: http, slack, postgres), if any
    model: type[BaseModel]

    @property
    def title(self) -> str:
        where = self.path or "top level"
        return f"{where} (kind: {self.kind})" if self.kind else where

    @property
    def anchor(self) -> str:
        return slug(self.title)


def documented_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The fields a config file may set: secrets resolved from ``*_env`` variables (excluded
    from dumps, refused in the file) are not among them."""
    return {name: f for name, f in model.model_fields.items() if not f.exclude}


def _strip_annotated(tp: Any) -> tuple[Any, list[Any]]:
    metadata: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        inner, *extra = typing.get_args(tp)
        metadata.extend(extra)
        tp = inner
    return tp, metadata


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def models_in(tp: Any, suffix: str = "") -> Iterator[tuple[type[BaseModel], str, str | None]]:
    """The models a field's type holds: (model, path suffix such as ``[]``, tag)."""
    tp, metadata = _strip_annotated(tp)
    origin = typing.get_origin(tp)
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        tag = next((getattr(m, "tag", None) for m in metadata if hasattr(m, "tag")), None)
        yield tp, suffix, tag
    elif origin in (tuple, list, set, frozenset):
        yield from models_in(typing.get_args(tp)[0], suffix + "[]")
    elif origin is dict:
        yield from models_in(typing.get_args(tp)[1], suffix + ".<name>")
    elif _is_union(tp):
        for arg in typing.get_args(tp):
            yield from models_in(arg, suffix)


def config_sections(root: type[BaseModel] | None = None) -> list[ConfigSection]:
    """Every model reachable from the root config model, depth first, in field order."""
    if root is None:
        from schemas.config import HookstreamConfig

        root = HookstreamConfig
    sections: list[ConfigSection] = []

    def visit(model: type[BaseModel], path: str, kind: str | None) -> None:
        sections.append(ConfigSection(path, kind, model))
        for name, field in documented_fields(model).items():
            for child, suffix, tag in models_in(field.annotation):
                visit(child, f"{path}.{name}{suffix}" if path else f"{name}{suffix}", tag)

    visit(root, "", None)
    return sections


def _constraints(metadata: list[Any]) -> list[str]:
    words: list[str] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            words.extend(_constraints(list(item.metadata)))
            continue
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                words.append(
                    f"{sign} {value:_}".replace("_", ",")
                    if isinstance(value, int)
                    else f"{sign} {value}"
                )
        min_length = getattr(item, "min_length", None)
        if min_length is not None:
            words.append(f"at least {min_length}")
        pattern = getattr(item, "pattern", None)
        if pattern is not None:
            words.append(f"pattern `{pattern}`")
    return words


_SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    Any: "any",
}


def type_text(tp: Any, anchors: dict[type[BaseModel], list[tuple[str, str]]]) -> str:
    """A field's type in words, models linked to their sections."""
    tp, metadata = _strip_annotated(tp)
    constraints = _constraints(metadata)
    origin = typing.get_origin(tp)
    if tp in _SCALARS:
        text = _SCALARS[tp]
    elif origin is typing.Literal:
        text = "one of " + ", ".join(f"`{json.dumps(v)}`" for v in typing.get_args(tp))
    elif origin in (tuple, list, set, frozenset):
        text = "list of " + type_text(typing.get_args(tp)[0], anchors)
    elif origin is dict:
        key, value = typing.get_args(tp)
        text = f"map of {type_text(key, anchors)} to {type_text(value, anchors)}"
    elif _is_union(tp):
        text = " or ".join(type_text(arg, anchors) for arg in typing.get_args(tp))
    elif inspect.isclass(tp) and issubclass(tp, BaseModel):
        links = anchors.get(tp, [])
        text = " or ".join(f"[{title}](#{anchor})" for title, anchor in links) or tp.__name__
    elif getattr(tp, "__name__", "") == "IPvAnyNetwork":
        text = "IP network (CIDR)"
    else:
        text = getattr(tp, "__name__", str(tp))
    return f"{text} ({', '.join(constraints)})" if constraints else text


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in YAML, or "required"."""
    if field.is_required():
        return "**required**"
    factory = field.default_factory
    value = factory() if factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value, default=str)}`"


def config_reference() -> str:
    """``reference/config.md``: every model of the config file and every field."""
    sections = config_sections()
    anchors: dict[type[BaseModel], list[tuple[str, str]]] = {}
    for section in sections:
        anchors.setdefault(section.model, []).append((f"`{section.title}`", section.anchor))
    lines = [
        "# Config reference",
        "",
        GENERATED_NOTE,
        "The models of `schemas/config.py` and `schemas/config_*.py`, one section per block "
        "of the YAML file, in the order they nest. `[]` marks a list item, `<name>` a key "
        "of your choosing. A field ending in `_env` names the environment variable that holds "
        "a secret; the secret itself is never written in the file. The prose is in "
        "[Configuration](../configuration.md).",
        "",
    ]
    for section in sections:
        lines += [f"## `{section.title}` {{#{section.anchor}}}", ""]
        doc = own_doc(section.model)
        if doc:
            lines += [rst_to_md(doc), ""]
        fields = documented_fields(section.model)
        if not fields:
            continue
        lines += ["| field | type | default | description |", "|---|---|---|---|"]
        for name, field in fields.items():
            type_cell = type_text(field.annotation, anchors)
            constraints = _constraints(list(field.metadata))
            if constraints:
                type_cell += f" ({', '.join(constraints)})"
            lines.append(
                f"| `{name}` | {cell(type_cell)} | {cell(default_text(field))} | "
                f"{cell(rst_to_md(field.description or ''))} |"
            )
        lines.append("")
    return "\n".join(lines)


# --- CLI reference ----------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_environment() -> Iterator[None]:
    """Build parsers as on a machine with nothing set: defaults read from HOOKSTREAM_* and
    KAFKA_* variables must not leak the builder's environment into the manual, and usage
    lines wrap at a fixed width."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("HOOKSTREAM_", "KAFKA_")):
            del os.environ[name]
    os.environ["COLUMNS"] = "100"
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass(frozen=True)
class Command:
    """One parser of the CLI: its words after ``hookstream``, its help, usage and parser."""

    words: tuple[str, ...]
    help: str
    usage: str
    parser: argparse.ArgumentParser

    @property
    def title(self) -> str:
        return " ".join(("hookstream", *self.words))


def _subcommands(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


# The simulators parse their own arguments (``hookstream dev ai-sim ARGS``): their parsers.
SIMULATOR_PARSERS = {
    "ai-sim": "streams.dev.ai_sim",
    "crm-sim": "streams.dev.crm_sim",
    "slack-sim": "streams.dev.slack_sim",
}


def cli_commands() -> list[Command]:
    """Every parser of ``hookstream``, depth first; the simulators' parsers under ``dev``."""
    from streams.cli.main import build_parser

    commands: list[Command] = []
    with _quiet_environment():

        def visit(parser: argparse.ArgumentParser, words: tuple[str, ...], help: str) -> None:
            commands.append(Command(words, help, parser.format_usage(), parser))
            for name, sub_help, sub in _subcommands(parser):
                visit(sub, (*words, name), sub_help)

        root = build_parser()
        visit(root, (), root.description or "")
        known = {c.words for c in commands}
        for name, module in SIMULATOR_PARSERS.items():
            if ("dev", name) not in known:
                sim: argparse.ArgumentParser = importlib.import_module(module).build_parser()
                sim.prog = f"hookstream dev {name}"
                commands.append(
                    Command(("dev", name), sim.description or "", sim.format_usage(), sim)
                )
    return commands


# A help text that says "default" (also "defaults to", and argparse's ``%(default)s``, checked
# before it is expanded) already gives the option's default: the row does not add it again.
_STATES_DEFAULT = re.compile(r"\bdefault", re.IGNORECASE)


def states_default(help: str) -> bool:
    """Whether an option's unexpanded help text gives its default itself."""
    return _STATES_DEFAULT.search(help) is not None


def _argument_row(action: argparse.Action, prog: str) -> str | None:
    if action.help == argparse.SUPPRESS or isinstance(
        action, argparse._HelpAction | argparse._SubParsersAction
    ):
        return None
    if action.option_strings:
        metavar = ""
        if action.nargs != 0:
            if isinstance(action.metavar, str):
                metavar = " " + action.metavar
            elif action.choices is None:
                metavar = " " + action.dest.upper()
        name = ", ".join(f"`{o}{metavar}`" for o in action.option_strings)
    else:
        name = f"`{action.metavar if isinstance(action.metavar, str) else action.dest}`"
    raw_help = action.help or ""
    help = raw_help % {**vars(action), "prog": prog} if "%" in raw_help else raw_help
    notes: list[str] = []
    if action.choices is not None:
        notes.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
    if action.required and action.option_strings:
        notes.append("required")
    if action.nargs == argparse.REMAINDER:
        notes.append("the rest of the line")
    default = action.default
    if (
        action.option_strings
        and action.nargs != 0
        and default not in (None, argparse.SUPPRESS)
        and not states_default(raw_help)
    ):
        notes.append(f"default `{default}`")
    text = "; ".join(x for x in (help, *notes) if x)
    return f"| {name} | {cell(rst_to_md(text))} |"


def cli_reference() -> str:
    """``reference/cli.md``: every subcommand with its usage and its arguments."""
    lines = [
        "# CLI reference",
        "",
        GENERATED_NOTE,
        "Every `hookstream` subcommand, from its argument parser; `hookstream COMMAND --help` "
        "prints the same. What the commands are for is in [Operations](../operations.md).",
        "",
    ]
    commands = cli_commands()
    for command in commands:
        level = "#" * min(2 + max(len(command.words) - 1, 0), 4)
        lines += [f"{level} `{command.title}` {{#{slug(command.title)}}}", ""]
        if command.help:
            lines += [rst_to_md(command.help), ""]
        lines += ["```text", command.usage.rstrip(), "```", ""]
        rows = [
            row
            for action in command.parser._actions
            if (row := _argument_row(action, command.parser.prog)) is not None
        ]
        if rows:
            lines += ["| argument | what it does |", "|---|---|", *rows, ""]
        children = [
            c.title
            for c in commands
            if len(c.words) == len(command.words) + 1 and c.words[:-1] == command.words
        ]
        if children:
            lines += ["Subcommands: " + ", ".join(f"[`{c}`](#{slug(c)})" for c in children), ""]
    return "\n".join(lines)


# --- problem codes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One problem ``code`` the gateway answers with, as its OpenAPI document declares it."""

    code: str
    status: int
    meaning: str
    routes: tuple[str, ...]
    retry_after: bool


def _codes_in(schema: Any) -> list[str]:
    """The ``code`` enum anywhere inside a response schema."""
    found: list[str] = []
    if isinstance(schema, dict):
        code = schema.get("properties", {}).get("code")
        if isinstance(code, dict) and isinstance(code.get("enum"), list):
            found.extend(str(c) for c in code["enum"])
        for value in schema.values():
            found.extend(c for c in _codes_in(value) if c not in found)
    elif isinstance(schema, list):
        for value in schema:
            found.extend(c for c in _codes_in(value) if c not in found)
    return found


def openapi_document() -> dict[str, Any]:
    """The gateway's OpenAPI document for a one-source config (the problem codes do not
    depend on the sources)."""
    from schemas.config import HookstreamConfig
    from streams.gateway.openapi import build_openapi

    config = HookstreamConfig.model_validate(
        {"sources": [{"name": "example", "signature": {"scheme": "none"}}]}
    )
    return build_openapi(config)


def problems() -> list[Problem]:
    """Every (code, status) of the document, with the routes that answer it."""
    document = openapi_document()
    found: dict[tuple[int, str, str], Problem] = {}
    for route, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                schema = response.get("content", {}).get("application/problem+json")
                if schema is None:
                    continue
                meaning = str(response.get("description", ""))
                for code in _codes_in(schema):
                    key = (int(status), code, meaning)
                    known = found.get(key)
                    found[key] = Problem(
                        code,
                        int(status),
                        meaning,
                        (*(known.routes if known else ()), f"{method.upper()} {route}"),
                        "Retry-After" in response.get("headers", {}),
                    )
    return sorted(found.values(), key=lambda p: (p.status, p.routes, p.code))


def declared_codes() -> list[tuple[int, str]]:
    """Every (status, code) the gateway declares, whether or not a route's answers list it."""
    from streams.gateway.openapi import PROBLEM_CODES

    return [(status, code) for status, codes in PROBLEM_CODES.items() for code in codes]


def problems_reference() -> str:
    """``reference/problems.md``: the problem codes, their statuses and meaning, and the
    problem body's fields."""
    document = openapi_document()
    problem_schema = document["components"]["schemas"]["Problem"]
    lines = [
        "# Problem codes",
        "",
        GENERATED_NOTE,
        "Every refusal of the gateway is an RFC 9457 `application/problem+json` body; its "
        "`code` says which check refused the request. This page is built from the gateway's "
        "OpenAPI document (`streams/gateway/openapi.py`), which the gateway serves at "
        "`GET /openapi.json` and which the fuzz tests hold it to. "
        "How senders should react is in [Gateway](../gateway.md).",
        "",
        "## The problem body",
        "",
        rst_to_md(problem_schema.get("description", "")),
        "",
        "| field | type | required |",
        "|---|---|---|",
    ]
    required = set(problem_schema.get("required", []))
    for name, prop in problem_schema["properties"].items():
        lines.append(
            f"| `{name}` | {prop.get('type', '')} | {'yes' if name in required else 'no'} |"
        )
    lines += [
        "",
        "## Codes",
        "",
        "| status | `code` | answered by | meaning |",
        "|---|---|---|---|",
    ]
    groups: dict[tuple[int, str], list[Problem]] = {}
    for problem in problems():
        groups.setdefault((problem.status, problem.meaning), []).append(problem)
    for (status, _), group in groups.items():
        codes = ", ".join(f"`{p.code}`" for p in group)
        routes = sorted({r for p in group for r in p.routes})
        meaning = group[0].meaning
        if any(p.retry_after for p in group):
            meaning += " Sent with a `Retry-After` header (whole seconds)."
        where = ", ".join(f"`{r}`" for r in routes)
        lines.append(f"| {status} | {codes} | {cell(where)} | {cell(meaning)} |")
    documented = {p.code for p in problems()}
    undocumented = [(status, code) for status, code in declared_codes() if code not in documented]
    if undocumented:
        lines += [
            "",
            "Declared in `streams/gateway/openapi.py`'s `PROBLEM_CODES` but in no route's "
            "answers in the document: "
            + ", ".join(f"`{code}` ({status})" for status, code in undocumented)
            + ".",
        ]
    lines += ["", "## Routes", "", "| route | answers | what it does |", "|---|---|---|"]
    for route, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = ", ".join(str(s) for s in operation.get("responses", {}))
            lines.append(
                f"| `{method.upper()} {route}` | {statuses} | "
                f"{cell(operation.get('summary', ''))} |"
            )
    lines.append("")
    return "\n".join(lines)


# --- metrics ----------------------------------------------------------------------------------

METRIC_PREFIX = "hookstream_"
METRIC_PACKAGES = ("agents", "streams")


@dataclass(frozen=True)
class MetricInfo:
    """One metric family as Prometheus scrapes it."""

    name: str  # as exposed: counters end in _total
    type: str
    labels: tuple[str, ...]
    help: str
    module: str  # where it is declared


def import_all_modules() -> list[str]:
    """Import every module of ``agents`` and ``streams``: a metric is registered when the
    module that declares it is imported, wherever that module is."""
    names: list[str] = []
    for package_name in METRIC_PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.walk_packages(package.__path__, package_name + "."):
            importlib.import_module(module.name)
            names.append(module.name)
    return names


def metrics() -> list[MetricInfo]:
    """Every ``hookstream_*`` metric in the default registry, with the module declaring it."""
    from prometheus_client import REGISTRY

    modules = import_all_modules()
    # The registry's collector list has no public accessor; this is prometheus_client's own map.
    collectors = list(REGISTRY._collector_to_names)
    holders: dict[int, list[str]] = {}
    for module_name in modules:
        for value in vars(sys.modules[module_name]).values():
            if any(value is c for c in collectors):
                holders.setdefault(id(value), []).append(module_name)
    found: list[MetricInfo] = []
    for collector in collectors:
        describe: Callable[[], Any] | None = getattr(collector, "describe", None)
        families = list(describe() if describe is not None else collector.collect())
        labels: tuple[str, ...] = tuple(
            getattr(collector, "_labelnames", None) or getattr(collector, "labelnames", None) or ()
        )
        for family in families:
            if not family.name.startswith(METRIC_PREFIX):
                continue
            name = family.name + "_total" if family.type == "counter" else family.name
            module = _declaring_module(family.name, holders.get(id(collector), []))
            found.append(MetricInfo(name, family.type, labels, family.documentation, module))
    return sorted(found, key=lambda m: (m.module, m.name))


def _declaring_module(family_name: str, holders: list[str]) -> str:
    """Of the modules holding a metric (its own, and those importing it), the one whose
    source spells its name."""
    for module_name in holders:
        source = inspect.getsource(sys.modules[module_name])
        if f'"{family_name}' in source:
            return module_name
    return holders[0] if holders else "(not held by a module)"


def metrics_reference() -> str:
    """``reference/metrics.md``: every metric, grouped by the module that declares it."""
    lines = [
        "# Metrics",
        "",
        GENERATED_NOTE,
        "Every Prometheus metric hookstream declares, read from the registry after importing "
        "every module. Histograms are scraped as `<name>_bucket`, `<name>_sum` and "
        "`<name>_count`. Label values are bounded (configured names, statuses, outcomes): "
        "never event ids or payload content.",
        "",
    ]
    by_module: dict[str, list[MetricInfo]] = {}
    for metric in metrics():
        by_module.setdefault(metric.module, []).append(metric)
    for module_name, rows in by_module.items():
        lines += [f"## `{module_name}`", ""]
        module = sys.modules.get(module_name)
        doc = inspect.getdoc(module) if module is not None else None
        if doc:
            lines += [rst_to_md(doc.split("\n\n")[0]), ""]
        lines += ["| metric | type | labels | help |", "|---|---|---|---|"]
        for m in rows:
            labels = ", ".join(f"`{label}`" for label in m.labels) or "—"
            lines.append(f"| `{m.name}` | {m.type} | {labels} | {cell(m.help)} |")
        lines.append("")
    return "\n".join(lines)


# --- benchmark results ------------------------------------------------------------------------


def benchmark_pages() -> dict[str, str]:
    """``benchmarks/<name>.md`` for each results file, with a line saying where it comes from."""
    pages: dict[str, str] = {}
    for path in sorted(RESULTS_DIR.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        head, _, rest = text.partition("\n")
        source = (
            f"\n\n*The file `bench/results/{path.name}` as its benchmark last wrote it; "
            "the summary is in [Benchmarks](../benchmarks.md).*\n"
        )
        pages[f"benchmarks/{path.stem}.md"] = head + source + rest
    return pages


def _title(markdown: str, fallback: str) -> str:
    first = markdown.lstrip().partition("\n")[0]
    return first.lstrip("#").strip() if first.startswith("#") else fallback


# --- architecture: the import contracts and the modules ----------------------------------------

PACKAGES = ("schemas", "streams", "agents")


def contracts_markdown(pyproject: Path | None = None) -> str:
    """The import-linter contracts of ``pyproject.toml``, one section each."""
    import tomllib

    data = tomllib.loads((pyproject or ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = data["tool"]["importlinter"]["contracts"]
    lines: list[str] = []
    for contract in contracts:
        lines += [f"**{contract['name']}** (`{contract['type']}`)", ""]
        for key in ("layers", "source_modules", "forbidden_modules", "ancestors"):
            values = contract.get(key)
            if values:
                label = key.replace("_", " ")
                arrow = " → " if key == "layers" else ", "
                lines += [f"- {label}: " + arrow.join(f"`{v}`" for v in values)]
        lines.append("")
    return "\n".join(lines)


def layout_markdown(root: Path = ROOT) -> str:
    """Each package's modules with their line counts and the first line of their docstring."""
    import ast

    lines: list[str] = []
    for package in PACKAGES:
        by_dir: dict[Path, list[Path]] = {}
        for path in sorted((root / package).rglob("*.py")):
            by_dir.setdefault(path.parent, []).append(path)
        for directory, paths in sorted(by_dir.items()):
            rel = directory.relative_to(root).as_posix()
            lines += [f"### `{rel}/`", "", "| module | lines | what it is |", "|---|---:|---|"]
            for path in paths:
                source = path.read_text(encoding="utf-8")
                doc = ast.get_docstring(ast.parse(source)) or ""
                if path.name == "__init__.py" and not doc:
                    continue  # an empty package marker
                first = doc.strip().split("\n\n")[0]
                count = source.count("\n")
                lines.append(f"| `{path.name}` | {count} | {cell(rst_to_md(first))} |")
            lines.append("")
    return "\n".join(lines)


def readme_quickstart(readme: Path | None = None) -> str:
    """The README's "Two commands" and quickstart sections, for docs/quickstart.md.

    One text, run by tests/integration/test_readme.py, shown in both places: links into docs/
    become page links, and the fences lose the ``readme:<name>`` tags the test finds its
    blocks by.
    """
    text = (readme or ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Two commands")
    end = text.index("\n## What you can rely on")
    part = text[start:end].strip()
    part = re.sub(r"^(```\w+) readme:[\w-]+$", r"\1", part, flags=re.MULTILINE)
    part = part.replace("](docs/", "](")
    return part + "\n"


PAGE_INSERTS: dict[str, Callable[[], str]] = {
    "<!-- generated: readme-quickstart -->": readme_quickstart,
    "<!-- generated: importlinter-contracts -->": contracts_markdown,
    "<!-- generated: package-layout -->": layout_markdown,
}


# --- the pages and the mkdocs hooks -----------------------------------------------------------

REFERENCE_PAGES: dict[str, Callable[[], str]] = {
    "reference/config.md": config_reference,
    "reference/cli.md": cli_reference,
    "reference/problems.md": problems_reference,
    "reference/metrics.md": metrics_reference,
}


def generated_pages() -> dict[str, str]:
    """Every generated page: path under docs/ → Markdown."""
    pages = {path: build() for path, build in REFERENCE_PAGES.items()}
    pages.update(benchmark_pages())
    return pages


def on_config(config: Any) -> Any:
    """List each benchmark's results page under the nav's Benchmarks section."""
    nav = config.get("nav") or []
    for entry in nav:
        if isinstance(entry, dict) and isinstance(entry.get(BENCH_NAV_TITLE), list):
            section: list[Any] = entry[BENCH_NAV_TITLE]
            listed = {v for item in section if isinstance(item, dict) for v in item.values()}
            for path, text in benchmark_pages().items():
                if path not in listed:
                    section.append({_title(text, path): path})
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the build (nothing is written to docs/)."""
    from mkdocs.structure.files import File

    for path, text in generated_pages().items():
        files.append(File.generated(config, path, content=text))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill the generated parts of hand-written pages (architecture.md)."""
    for marker, build in PAGE_INSERTS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, build())
    return markdown
