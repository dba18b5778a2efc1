"""The small template language of the config file: ``{{ data.customer.id }}``.

Deliberately not Jinja: a config author should not be able to run code, and every template is
parsed when the config loads, so a typo fails at start rather than on the first event. A
placeholder is a dotted path into the render context (``event``, ``data``, ``enrichment``,
``result``); integer segments index lists. Three renderings:

- :func:`render_text` for prompts: values become text (objects as JSON).
- :func:`render_url` for URLs: values are percent-encoded, so ``a/b`` cannot change the path.
- :func:`render_json` for request bodies: a string that is exactly one placeholder keeps the
  value's JSON type (number, object...); other strings are text-rendered.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from schemas.errors import TemplateError

_PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and placeholder paths, alternating."""

    source: str
    literals: tuple[str, ...]
    paths: tuple[tuple[str, ...], ...]

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
    for match in _PLACEHOLDER.finditer(source):
        expression = match.group(1)
        if not _PATH.match(expression):
            raise TemplateError(
                f"placeholder {match.group(0)!r} is not a dotted field path like data.customer_id"
            )
        literals.append(source[position : match.start()])
        paths.append(tuple(expression.split(".")))
        position = match.end()
    literals.append(source[position:])
    # "}}" alone is fine as text (JSON examples in prompts); an unclosed "{{" is a typo.
    if any("{{" in literal for literal in literals):
        raise TemplateError(f"unclosed '{{{{' in template {source!r}")
    return Template(source=source, literals=tuple(literals), paths=tuple(paths))


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


def render_text(template: Template, context: Mapping[str, Any]) -> str:
    parts = [template.literals[0]]
    for path, literal in zip(template.paths, template.literals[1:], strict=True):
        parts.append(_as_text(lookup(context, path)))
        parts.append(literal)
    return "".join(parts)


def render_url(template: Template, context: Mapping[str, Any]) -> str:
    parts = [template.literals[0]]
    for path, literal in zip(template.paths, template.literals[1:], strict=True):
        parts.append(quote(_as_text(lookup(context, path)), safe=""))
        parts.append(literal)
    return "".join(parts)


def render_json(body: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside a JSON-like structure (keys are left as written)."""
    if isinstance(body, str):
        template = parse(body)
        if template.is_single_placeholder:
            return lookup(context, template.paths[0])
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
