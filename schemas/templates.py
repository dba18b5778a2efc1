"""The small template language of the config file: ``{{ data.customer.id }}``.

Deliberately not Jinja: a config author should not be able to run code, and every template is
parsed when the config loads, so a typo fails at start rather than on the first event. A
placeholder is a dotted path into the render context (``event``, ``data``, ``enrichment``,
``result``); integer segments index lists.

A placeholder may pass its value through filters, left to right, each checked at load (an
unknown filter or a wrong argument fails the config, naming the known filters):

- ``default(v)``: ``v`` (a JSON literal: ``"n/a"``, ``'n/a'``, ``0``, ``true``, ``null``) when
  the field is missing or null; without it a missing field is an error (a dead letter at a
  sink). It must come before any other filter to catch a missing field.
- ``upper``, ``lower``: the value's text in upper or lower case.
- ``truncate(n)``: the value's text cut to at most ``n`` characters (no ellipsis added).
- ``json``: the value serialized as JSON text (``"a"`` keeps its quotes, an object is one line).

Three renderings:

- :func:`render_text` for prompts: values become text (objects as JSON).
- :func:`render_url` for URLs: values are percent-encoded, so ``a/b`` cannot change the path.
- :func:`render_json` for request bodies: a string that is exactly one placeholder keeps the
  value's JSON type (number, object...); other strings are text-rendered.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from schemas.errors import TemplateError

_PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")
PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
_ARGUMENT = r"\"(?:[^\"\\]|\\.)*\"|'[^']*'|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null"
_FILTER = re.compile(rf"\s*\|\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(\s*({_ARGUMENT})?\s*\))?\s*")
_EXPRESSION = re.compile(r"^([^|\s]+)\s*(.*)$", re.DOTALL)
_MISSING = object()
# Each filter: whether it takes an argument.
FILTERS = {"default": True, "json": False, "lower": False, "truncate": True, "upper": False}


@dataclass(frozen=True, slots=True)
class Filter:
    """One ``| name(argument)`` of a placeholder; ``argument`` is the parsed JSON literal."""

    name: str
    argument: Any = None


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and placeholders (a path and its filters), alternating."""

    source: str
    literals: tuple[str, ...]
    paths: tuple[tuple[str, ...], ...]
    filters: tuple[tuple[Filter, ...], ...] = ()

    @property
    def is_single_placeholder(self) -> bool:
        return len(self.paths) == 1 and self.literals == ("", "")

    @property
    def roots(self) -> set[str]:
        return {path[0] for path in self.paths}


def parse(source: str) -> Template:
    """Parse ``source``; raise :class:`TemplateError` naming the bad placeholder."""
    literals: list[str] = []
    paths: list[tuple[str, ...]] = []
    position = 0
    filters: list[tuple[Filter, ...]] = []
    for match in _PLACEHOLDER.finditer(source):
        found = _EXPRESSION.match(match.group(1))
        rest = found.group(2) if found is not None else ""
        if found is None or not PATH.match(found.group(1)) or rest[:1] not in ("", "|"):
            raise TemplateError(
                f"placeholder {match.group(0)!r} is not a dotted field path like data.customer_id"
                ", optionally followed by | filters"
            )
        literals.append(source[position : match.start()])
        paths.append(tuple(found.group(1).split(".")))
        filters.append(_parse_filters(rest, match.group(0)))
        position = match.end()
    literals.append(source[position:])
    # "}}" alone is fine as text (JSON examples in prompts); an unclosed "{{" is a typo.
    if any("{{" in literal for literal in literals):
        raise TemplateError(f"unclosed '{{{{' in template {source!r}")
    return Template(
        source=source, literals=tuple(literals), paths=tuple(paths), filters=tuple(filters)
    )


def _parse_filters(text: str, placeholder: str) -> tuple[Filter, ...]:
    """The ``| name(argument)`` chain after a placeholder's path; TemplateError naming the
    placeholder and, for an unknown filter, the known ones."""
    parsed: list[Filter] = []
    position = 0
    while position < len(text):
        match = _FILTER.match(text, position)
        if match is None:
            raise TemplateError(
                f"placeholder {placeholder!r}: expected '| filter' or '| filter(argument)' "
                f"after the path, at {text[position:]!r} (an argument is a JSON literal: "
                "\"text\", 'text', a number, true, false or null)"
            )
        name, argument = match.group(1), match.group(2)
        if text.startswith("(", match.end()):
            raise TemplateError(
                f"placeholder {placeholder!r}: filter {name}: its argument must be one JSON "
                "literal: \"text\", 'text', a number, true, false or null"
            )
        if name not in FILTERS:
            raise TemplateError(
                f"placeholder {placeholder!r}: unknown filter {name!r}; known filters: "
                f"{', '.join(sorted(FILTERS))}"
            )
        takes = FILTERS[name]
        if takes and argument is None:
            raise TemplateError(f"placeholder {placeholder!r}: filter {name} needs an argument")
        if not takes and "(" in match.group(0):
            raise TemplateError(f"placeholder {placeholder!r}: filter {name} takes no argument")
        value = _literal(argument) if argument is not None else None
        if name == "truncate" and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ):
            raise TemplateError(
                f"placeholder {placeholder!r}: truncate takes a whole number of characters "
                f">= 1, got {argument}"
            )
        parsed.append(Filter(name, value))
        position = match.end()
    return tuple(parsed)


def _literal(text: str) -> Any:
    if text.startswith("'"):
        return text[1:-1]
    return orjson.loads(text)


def lookup(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """Follow ``path`` through nested mappings and lists; raise if any step is missing."""
    current: Any = context
    for depth, segment in enumerate(path):
        value: Any = _MISSING
        if isinstance(current, Mapping):
            value = current.get(segment, _MISSING)
        elif isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            value = current[int(segment)]
        if value is _MISSING:
            where = ".".join(path[: depth + 1])
            raise TemplateError(
                f"the event has no field {where!r} (template path {'.'.join(path)})"
            )
        current = value
    return current


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def value_of(template: Template, index: int, context: Mapping[str, Any]) -> Any:
    """The value of the template's ``index``-th placeholder: its path's value through its
    filters. A missing field raises unless a ``default`` comes before any other filter."""
    path = template.paths[index]
    chain = template.filters[index] if template.filters else ()
    if not chain:
        return lookup(context, path)
    try:
        value: Any = lookup(context, path)
    except TemplateError:
        if chain[0].name != "default":
            raise
        value = None
    for step in chain:
        value = _apply(step, value)
    return value


def _apply(step: Filter, value: Any) -> Any:
    if step.name == "default":
        return step.argument if value is None else value
    if step.name == "json":
        return orjson.dumps(value).decode()
    text = _as_text(value)
    if step.name == "upper":
        return text.upper()
    if step.name == "lower":
        return text.lower()
    return text[: step.argument]  # truncate


def _rendered(template: Template, context: Mapping[str, Any], encode: Any) -> str:
    parts = [template.literals[0]]
    for index, literal in enumerate(template.literals[1:]):
        parts.append(encode(_as_text(value_of(template, index, context))))
        parts.append(literal)
    return "".join(parts)


def render_text(template: Template, context: Mapping[str, Any]) -> str:
    return _rendered(template, context, str)


def render_url(template: Template, context: Mapping[str, Any]) -> str:
    return _rendered(template, context, lambda text: quote(text, safe=""))


# render_json's strings come from config (a sink's body, a flow's output), the same few for
# every event: each is parsed once, not once per event (issue 16: ~10 µs per sink delivery).
_parse_cached = functools.lru_cache(maxsize=1024)(parse)


def render_json(body: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside a JSON-like structure (keys are left as written)."""
    if isinstance(body, str):
        template = _parse_cached(body)
        if template.is_single_placeholder:
            return value_of(template, 0, context)
        return render_text(template, context)
    if isinstance(body, Mapping):
        return {key: render_json(value, context) for key, value in body.items()}
    if isinstance(body, list):
        return [render_json(item, context) for item in body]
    return body


def templates_in(body: Any) -> list[Template]:
    """Every template inside a JSON-like body, parsed (used to validate config at load)."""
    if isinstance(body, str):
        return [parse(body)]
    if isinstance(body, Mapping):
        return [t for value in body.values() for t in templates_in(value)]
    if isinstance(body, list):
        return [t for item in body for t in templates_in(item)]
    return []


def strings_in(
    body: Any, location: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string inside a JSON-like body with its path (keys and list indexes): where a
    template sits, so a check of the raw config can name its line."""
    if isinstance(body, str):
        yield location, body
    elif isinstance(body, Mapping):
        for key, value in body.items():
            yield from strings_in(value, (*location, key))
    elif isinstance(body, list):
        for index, item in enumerate(body):
            yield from strings_in(item, (*location, index))
