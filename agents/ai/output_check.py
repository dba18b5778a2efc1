"""A quick yes for answers that certainly fit a simple output schema (issue 16).

``jsonschema`` walks a schema keyword by keyword for every answer: ~21 µs for a two-property
object schema, the largest single piece of the AI stage's own work per event. Most flows
declare an object of a few typed properties, perhaps an ``enum``, ``required`` and length
bounds. For such a schema, :func:`quick_check` compiles a predicate that answers ``True``
only when the answer certainly fits, in ~1-2 µs.

It never says no: ``False`` means "ask jsonschema", which then decides and words every error
exactly as before. A schema using any keyword outside the small set below gets no predicate at
all (``None``): every answer goes to jsonschema, as it did before. So the predicate can only
ever be wrong by accepting what jsonschema refuses, and tests/unit/agents/ai/test_output_check.py
compares the two on generated answers for that.

Supported: ``type`` (a name or a list), ``enum`` of strings and nulls, ``properties``,
``required``, ``additionalProperties`` as a boolean, ``minLength``/``maxLength``,
``items`` as one schema, ``minItems``/``maxItems``; annotations (``title``, ``description``,
``format``, which draft 2020-12 does not assert, and the like) are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "examples",
        "default",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",
    }
)
_SUPPORTED = _ANNOTATIONS | {
    "type",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "minLength",
    "maxLength",
    "items",
    "minItems",
    "maxItems",
}
_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def _is_integer(value: Any) -> bool:
    # JSON Schema's integer is a number with no fractional part: 2.0 is one, True is not.
    kind = type(value)
    return kind is int or (kind is float and value.is_integer())


_TYPES: dict[str, Check] = {
    "string": lambda value: type(value) is str,
    "object": lambda value: type(value) is dict,
    "array": lambda value: type(value) is list,
    "boolean": lambda value: type(value) is bool,
    "null": lambda value: value is None,
    "number": lambda value: type(value) in (int, float),
    "integer": _is_integer,
}


def quick_check(schema: Mapping[str, Any]) -> Check | None:
    """The predicate for ``schema`` (the flow's whole output schema), or None when it uses a
    keyword this module does not handle."""
    schema = dict(schema)
    if schema.get("$schema", _DRAFT_2020_12) != _DRAFT_2020_12:
        return None
    schema.pop("$schema", None)
    return _compile(schema)


def _compile(schema: Any) -> Check | None:
    if schema is True:
        return lambda value: True
    if not isinstance(schema, dict) or not set(schema) <= _SUPPORTED:
        return None  # False (nothing fits), or keywords only jsonschema knows
    checks: list[Check] = []
    for part in (_typed, _enumerated, _string_bounds, _object_parts, _array_parts):
        found = part(schema)
        if found is None:
            return None
        checks.extend(found)
    if not checks:
        return lambda value: True
    if len(checks) == 1:
        return checks[0]
    return lambda value: all(check(value) for check in checks)


def _typed(schema: dict[str, Any]) -> list[Check] | None:
    if "type" not in schema:
        return []
    names = schema["type"]
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not names or not all(n in _TYPES for n in names):
        return None
    tests = [_TYPES[name] for name in names]
    if len(tests) == 1:
        return [tests[0]]
    return [lambda value: any(test(value) for test in tests)]


def _enumerated(schema: dict[str, Any]) -> list[Check] | None:
    if "enum" not in schema:
        return []
    members = schema["enum"]
    # Strings and null only: jsonschema's equality treats 1 and 1.0 as one value and True
    # and 1 as two, which a set lookup would not reproduce.
    if not isinstance(members, list) or not all(m is None or type(m) is str for m in members):
        return None
    allowed = frozenset(members)
    return [lambda value: (value is None or type(value) is str) and value in allowed]


def _bounds(schema: dict[str, Any], low: str, high: str) -> tuple[int, float] | None:
    least, most = schema.get(low, 0), schema.get(high, float("inf"))
    for bound in (least, most):
        if type(bound) is not int and bound != float("inf"):
            return None  # 2.0 is a valid bound to jsonschema: left to it
    return least, most


def _string_bounds(schema: dict[str, Any]) -> list[Check] | None:
    if "minLength" not in schema and "maxLength" not in schema:
        return []
    bounds = _bounds(schema, "minLength", "maxLength")
    if bounds is None:
        return None
    least, most = bounds
    # len() counts code points, as the draft does.
    return [lambda value: type(value) is not str or least <= len(value) <= most]


def _object_parts(schema: dict[str, Any]) -> list[Check] | None:
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(required, list):
        return None
    if type(extra) is not bool or not all(type(name) is str for name in required):
        return None
    if not properties and not required and extra:
        return []
    compiled: dict[str, Check] = {}
    for name, sub in properties.items():
        check = _compile(sub)
        if check is None:
            return None
        compiled[name] = check
    needed = tuple(required)

    def fits(value: Any) -> bool:
        if type(value) is not dict:
            return True  # these keywords apply to objects only
        for name in needed:
            if name not in value:
                return False
        for name, item in value.items():
            check = compiled.get(name)
            if check is None:
                if not extra:
                    return False
            elif not check(item):
                return False
        return True

    return [fits]


def _array_parts(schema: dict[str, Any]) -> list[Check] | None:
    if not {"items", "minItems", "maxItems"} & set(schema):
        return []
    bounds = _bounds(schema, "minItems", "maxItems")
    each = _compile(schema.get("items", True))
    if bounds is None or each is None:
        return None
    least, most = bounds

    def fits(value: Any) -> bool:
        if type(value) is not list:
            return True
        return least <= len(value) <= most and all(each(item) for item in value)

    return [fits]
