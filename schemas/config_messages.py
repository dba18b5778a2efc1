"""What a pydantic validation error means in the config file's own terms.

pydantic speaks of its internals (``Input tag 'webhook' found using _sink_kind() does not match
any of the expected tags``, ``Extra inputs are not permitted``); a person editing YAML needs the
allowed values, the nearest known field and the value they wrote. :func:`explain` turns one
pydantic error into a location and a reason by walking the config models along the error's
path, so the allowed values and field names come from the models and cannot drift from them.

Values are echoed (shortened) so the reader sees what was read, except in fields that name or
hold a secret (``*_env`` and ``SecretStr`` fields): those never show what they contain.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic_core import ErrorDetails

Location = tuple[str | int, ...]

# The singular noun of a section, for "unknown sink kind 'webhook'" and "unknown provider kind".
_NOUNS = {
    "sources": "source",
    "providers": "provider",
    "flows": "flow",
    "sinks": "sink",
    "enrich": "lookup",
    "fallbacks": "fallback",
    "signature": "signature",
}
_LONGEST_SHOWN_CHARS = 40
_INTEGER_ERRORS = {"int_type", "int_parsing", "int_from_float", "int_parsing_size"}
_NUMBER_ERRORS = {"float_type", "float_parsing", "decimal_type", "decimal_parsing"}
_BOOL_ERRORS = {"bool_type", "bool_parsing"}
_MAPPING_ERRORS = {"model_type", "dict_type", "model_attributes_type", "mapping_type"}
_LIST_ERRORS = {"tuple_type", "list_type", "iterable_type", "set_type", "frozen_set_type"}
_NETWORK_ERRORS = {"ip_any_network", "ip_v4_network", "ip_v6_network"}
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be more than"),
    "less_than_equal": ("le", "must be at most"),
    "less_than": ("lt", "must be less than"),
}


@dataclass(frozen=True)
class Explained:
    """One problem: ``line_at`` finds the line in the file, ``shown`` is the path printed."""

    line_at: Location
    shown: Location
    reason: str


def suggestion(value: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``value`` (a typo, a wrong case), or None when none is."""
    by_folded = {name.casefold(): name for name in known}
    close = difflib.get_close_matches(value.casefold(), list(by_folded), n=1, cutoff=0.6)
    return by_folded[close[0]] if close else None


def unknown_choice(what: str, value: object, choices: Iterable[object]) -> str:
    """``unknown sink kind 'webhook'; expected one of: http, postgres, slack``, plus the closest
    choice when the value looks like a typo of one."""
    allowed = sorted({str(c) for c in choices})
    scalar = value is None or isinstance(value, bool | int | float)
    text = f"unknown {what} {_yaml_spelling(value) if scalar else show(value)}"
    if not allowed:
        return f"{text}; the file declares none"
    text += f"; expected one of: {', '.join(allowed)}"
    if isinstance(value, str) and (near := suggestion(value, allowed)) is not None:
        text += f" (did you mean {near!r}?)"
    elif _yaml_spelling(value) in allowed:
        text += f" (write it in quotes: '{_yaml_spelling(value)}')"
    return text


def unknown_field(name: str, fields: Iterable[str]) -> str:
    """``unknown field 'timout_s'; did you mean 'timeout_s'?``, or every field when none is
    close."""
    known = sorted(set(fields))
    near = suggestion(name, known)
    if near is not None:
        return f"unknown field {name!r}; did you mean {near!r}?"
    return f"unknown field {name!r}; allowed fields: {', '.join(known)}"


def show(value: object) -> str:
    """A value as YAML wrote it, shortened: a message must stay one readable line."""
    if value is None:
        return "nothing"
    if isinstance(value, bool | int | float):
        return _yaml_spelling(value)
    if isinstance(value, str):
        if len(value) > _LONGEST_SHOWN_CHARS:
            value = value[: _LONGEST_SHOWN_CHARS - 3] + "..."
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _yaml_spelling(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _unwrap(annotation: Any) -> Any:
    """Without ``Annotated`` and ``| None``: the type a value must have."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _union_models(annotation: Any) -> list[type[BaseModel]]:
    if get_origin(annotation) not in (Union, types.UnionType):
        return []
    return [m for m in (_model(_unwrap(a)) for a in get_args(annotation)) if m is not None]


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    annotation = _unwrap(annotation)
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def _tag_field(members: list[type[BaseModel]]) -> str | None:
    """The field that tells a union's models apart: a ``Literal`` in every one (``kind``)."""
    for name in members[0].model_fields:
        if all(
            name in m.model_fields and _literal_values(m.model_fields[name].annotation)
            for m in members
        ):
            return name
    return None


def _field_names(model: type[BaseModel]) -> list[str]:
    """The keys a file may write: aliases where set; not the fields the loader fills from the
    environment (``exclude=True``)."""
    return [f.alias or name for name, f in model.model_fields.items() if not f.exclude]


def _field(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


@dataclass(frozen=True)
class _Tagged:
    """The last tagged union the path went through: its models and the tag that chose one."""

    members: list[type[BaseModel]]
    field: str
    tag: str


def _walk(root: type[BaseModel], location: Location) -> tuple[Location, Any, _Tagged | None]:
    """The file's path to ``location`` (without the tags pydantic adds for a tagged union:
    ``sinks[0].http.url`` is ``sinks[0].url`` in the file), the type expected there, and the
    last tagged union on the way."""
    shown: list[str | int] = []
    tagged: _Tagged | None = None
    annotation: Any = root
    parts = list(location)
    index = 0
    while index < len(parts):
        part = parts[index]
        current = _unwrap(annotation)
        index += 1
        members = _union_models(current)
        if members and isinstance(part, str):
            field = _tag_field(members)
            annotation = None
            if field is not None:
                tagged = _Tagged(members, field, part)
                annotation = next((m for m in members if part in _tags(m, field)), None)
            continue
        shown.append(part)
        model, origin, args = _model(current), get_origin(current), get_args(current)
        if model is not None and isinstance(part, str):
            annotation = _field(model, part)
        elif origin in (tuple, list) and isinstance(part, int) and args:
            annotation = args[0]
        elif origin is dict and len(args) == 2:
            is_key = index < len(parts) and parts[index] == "[key]"
            annotation = args[0] if is_key else args[1]
            if is_key:
                shown.append("[key]")
                index += 1
        else:
            annotation = None
    return tuple(shown), annotation, tagged


def _tags(model: type[BaseModel], field: str) -> tuple[Any, ...]:
    return _literal_values(model.model_fields[field].annotation)


def _what(shown: Location) -> str:
    """``sink kind``, ``signature scheme``, ``version``: the field, named with its section."""
    names = [p for p in shown if isinstance(p, str)]
    if len(names) >= 2 and names[-2] in _NOUNS:
        return f"{_NOUNS[names[-2]]} {names[-1]}"
    return names[-1] if names else "value"


def _is_secret(shown: Location, annotation: Any) -> bool:
    name = next((p for p in reversed(shown) if isinstance(p, str)), "")
    return name.endswith("_env") or _unwrap(annotation) is SecretStr


def explain(
    error: ErrorDetails, root: type[BaseModel], pattern_hints: Mapping[str, str]
) -> Explained:
    """One pydantic error in the file's terms."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error["input"]
    shown, annotation, tagged = _walk(root, tuple(error["loc"]))
    parent, name = shown[:-1], shown[-1] if shown else ""
    got = "" if _is_secret(shown, annotation) else f", got {show(value)}"
    if kind == "extra_forbidden":
        model = _model(_unwrap(_walk(root, tuple(error["loc"])[:-1])[1]))
        fields = _field_names(model) if model is not None else []
        return Explained(shown, parent, _unknown_key(str(name), fields, tagged))
    if kind == "missing":
        choices = _literal_values(annotation)
        hint = f" (one of: {', '.join(sorted(map(str, choices)))})" if len(choices) > 1 else ""
        return Explained(shown, parent, f"missing required field {name!r}{hint}")
    if name == "[key]":
        key = parent[-1] if parent else ""
        hint = pattern_hints.get(str(ctx.get("pattern")), error["msg"])
        return Explained(shown, parent[:-1], f"key {key!r} {hint}")
    return Explained(shown, shown, _reason(error, shown, annotation, got, pattern_hints))


def _unknown_key(name: str, fields: list[str], tagged: _Tagged | None) -> str:
    """An unknown key; when it is a field of another kind of the same union (a Slack sink's
    ``text`` in a sink whose ``kind`` was forgotten), say which kind has it."""
    if tagged is not None and name not in fields:
        others = sorted(
            str(tag)
            for m in tagged.members
            if name in _field_names(m)
            for tag in _tags(m, tagged.field)
        )
        if others:
            return (
                f"unknown field {name!r} for {tagged.field} {tagged.tag}; it is a field of "
                f"{tagged.field} {' and '.join(others)}"
            )
    return unknown_field(name, fields)


def _reason(
    error: ErrorDetails,
    shown: Location,
    annotation: Any,
    got: str,
    pattern_hints: Mapping[str, str],
) -> str:
    """The reason of an error about one value; ``got`` is ``, got <value>`` or empty."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error["input"]
    if kind == "literal_error":
        choices = _literal_values(annotation)
        if len(choices) == 1:
            return f"must be {_yaml_spelling(choices[0])}{got}"
        return unknown_choice(_what(shown), value, choices)
    if kind == "union_tag_invalid":
        members = _union_models(_unwrap(annotation))
        field = _tag_field(members) if members else None
        if field is not None:
            tags = [t for m in members for t in _tags(m, field)]
            return unknown_choice(_what((*shown, field)), ctx.get("tag"), tags)
    if kind in _INTEGER_ERRORS:
        return f"expected a whole number{got}"
    if kind in _NUMBER_ERRORS:
        return f"expected a number{got}"
    if kind in _BOOL_ERRORS:
        return f"expected true or false{got}"
    if kind == "string_type":
        quote = " (write it in quotes)" if isinstance(value, bool | int | float) else ""
        return f"expected a string{got}{quote}"
    if kind in _MAPPING_ERRORS:
        return f"expected a mapping of fields (key: value){got}"
    if kind in _LIST_ERRORS:
        return f"expected a list{got}"
    if kind in _NETWORK_ERRORS:
        return f"expected a network like 10.0.0.0/8 or 2001:db8::/32{got}"
    if kind in _BOUNDS:
        key, text = _BOUNDS[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # "more than 0", as the reader thinks of it, not "0.0"
        return f"{text} {bound}{got}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} character(s) long"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        return f"{pattern_hints.get(pattern, f'must match the pattern {pattern}')}{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    return error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
