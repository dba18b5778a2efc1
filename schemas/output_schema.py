"""A flow's ``ai.output``: JSON Schema draft 2020-12, checked when the config loads.

Its own module because three places read the same schema and must agree on it: the config
model checks that it is a schema at all (:func:`schema_problems`, each problem at its own path
inside ``output`` so the loader can name the line), the sink templates that read
``result.<field>`` are checked against it (:func:`result_field_problem`), and the AI stage
validates each answer with it (:mod:`agents.ai.output`, through :func:`new_validator`).

The ``jsonschema`` library does the validating: JSON Schema has ~60 keywords with subtle
interactions (``$ref`` with siblings, ``unevaluatedProperties``, ``$dynamicRef``), and the
official test suite it passes is worth more than our own partial copy of it (the one before
this module enforced ``type`` and ``enum`` of top-level properties only).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from schemas.config_messages import show, suggestion, unknown_choice

Location = tuple[str | int, ...]

JSON_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
# Keywords whose value is one subschema, a mapping of them, or a list of them: the places a
# walk over the schema descends into.
_ONE_SCHEMA = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
# The keywords that make an answer invalid. An unknown key close to one of these (``maximun``)
# is refused: JSON Schema ignores unknown keys, so the typo would silently switch the check
# off. Unknown keys close to nothing (``x-unit``) or to an annotation (``example``) stay
# allowed, as the specification allows them.
_ASSERTIONS = frozenset(
    {
        *_ONE_SCHEMA,
        *_SCHEMA_MAPS,
        *_SCHEMA_LISTS,
        "$ref",
        "type",
        "const",
        "enum",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxContains",
        "minContains",
        "maxProperties",
        "minProperties",
        "required",
        "dependentRequired",
    }
)
# Annotations and core keywords without a validator of their own: known, never a typo.
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$anchor",
        "$dynamicAnchor",
        "$comment",
        "$vocabulary",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "examples",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
    }
)
_KEYWORD_TYPO_CUTOFF = 0.75
_BASE_URI = "urn:hookstream:flow-output"
_MOST_REMEMBERED = 256
_CHECKED: dict[bytes, list[tuple[Location, str]]] = {}
_META = Draft202012Validator(
    Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
)


def new_validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    """The validator of answers for ``schema`` (checked by :func:`schema_problems`).

    ``format`` stays an annotation, as draft 2020-12 specifies by default: the checkers
    available without optional packages cover only some formats (``date-time`` and ``uri``
    would pass unchecked), and a half-enforced keyword is worse than a documented one; use
    ``pattern`` for a format that matters.
    """
    return Draft202012Validator(schema)


def schema_problems(schema: Mapping[str, Any]) -> list[tuple[Location, str]]:
    """What makes ``schema`` unusable as a flow's output schema, each at its path inside it.

    Invalid against the draft 2020-12 meta-schema (``maximum: "ten"``), not an object schema
    at the top (the answer becomes the result's ``output``, a mapping), a keyword misspelt,
    ``required`` naming a property that is not declared, a ``$ref`` that leads nowhere.

    Remembered per schema text: the config model and the check of sink templates both ask,
    and the meta-schema validation is the costly part of loading a config (~3 ms a schema).
    """
    try:
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # keys that are not strings: rare enough to check again each time
        return _schema_problems(schema)
    if key not in _CHECKED:
        if len(_CHECKED) >= _MOST_REMEMBERED:
            _CHECKED.clear()
        _CHECKED[key] = _schema_problems(schema)
    return list(_CHECKED[key])


def _schema_problems(schema: Mapping[str, Any]) -> list[tuple[Location, str]]:
    problems: dict[tuple[Location, str], None] = {}  # ordered, without duplicates
    for error in _META.iter_errors(schema):
        location = tuple(error.absolute_path)
        problems[(location, _meta_reason(error, location))] = None
    if problems:
        return list(problems)  # the rest assumes a well-formed schema
    kind = schema.get("type")
    if kind != "object":
        reason = f"the top level must be type: object (the answer is a mapping), got {show(kind)}"
        problems[(("type",) if "type" in schema else (), reason)] = None
    for location, sub in _subschemas(schema, ()):
        for problem in _keyword_problems(sub, location):
            problems[problem] = None
    # The document under a base URI of its own: "#/..." resolves inside it, a remote $ref
    # (hookstream never fetches one) does not, and both as the validator would resolve them.
    root = DRAFT202012.create_resource(schema)
    base = root.id() or _BASE_URI
    resolver = Registry().with_resource(base, root).resolver(base_uri=base)
    for location, ref in _refs(schema, ()):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            remote = "" if ref.startswith("#") else " (hookstream does not fetch schemas)"
            problems[(location, f"$ref {ref!r} leads nowhere in this schema{remote}")] = None
    return list(problems)


def _meta_reason(error: ValidationError, location: Location) -> str:
    if location and location[-1] == "type" and error.validator == "anyOf":
        value = error.instance
        if isinstance(value, str):
            return unknown_choice("JSON type", value, JSON_TYPES)
        return f"must be a JSON type or a list of them ({', '.join(JSON_TYPES)})"
    if error.validator == "format" and error.validator_value == "regex":
        return f"{error.instance!r} is not a valid regular expression"
    return f"not valid JSON Schema (draft 2020-12): {error.message}"


def _subschemas(schema: Any, location: Location) -> Iterator[tuple[Location, Mapping[str, Any]]]:
    """Every schema object inside ``schema`` (itself included), with its path."""
    if not isinstance(schema, Mapping):
        return  # true / false
    yield location, schema
    for keyword in _ONE_SCHEMA:
        if keyword in schema:
            yield from _subschemas(schema[keyword], (*location, keyword))
    for keyword in _SCHEMA_MAPS:
        for name, sub in (schema.get(keyword) or {}).items():
            yield from _subschemas(sub, (*location, keyword, name))
    for keyword in _SCHEMA_LISTS:
        for index, sub in enumerate(schema.get(keyword) or ()):
            yield from _subschemas(sub, (*location, keyword, index))


def _keyword_problems(
    schema: Mapping[str, Any], location: Location
) -> Iterator[tuple[Location, str]]:
    for key in schema:
        if key in Draft202012Validator.VALIDATORS or key in _ANNOTATIONS:
            continue
        near = difflib.get_close_matches(key, list(_ASSERTIONS), n=1, cutoff=_KEYWORD_TYPO_CUTOFF)
        if near:
            yield (
                (*location, key),
                f"unknown keyword {key!r}; did you mean {near[0]!r}? (JSON Schema would ignore "
                "it, and its check with it)",
            )
    properties = schema.get("properties")
    required = schema.get("required")
    open_keys = "patternProperties" in schema or isinstance(
        schema.get("additionalProperties"), Mapping
    )
    if isinstance(properties, Mapping) and isinstance(required, list) and not open_keys:
        for index, name in enumerate(required):
            if name not in properties:
                spelled = suggestion(name, properties)
                hint = f"; did you mean {spelled!r}?" if spelled else ""
                reason = f"{name!r} is required but not among the properties{hint}"
                yield (*location, "required", index), reason


def _refs(schema: Any, location: Location) -> Iterator[tuple[Location, str]]:
    for sub_location, sub in _subschemas(schema, location):
        ref = sub.get("$ref")
        if isinstance(ref, str):
            yield (*sub_location, "$ref"), ref


# --- what an answer may hold: the check of templates reading result.<field> -----------------


def result_field_problem(
    schema: Mapping[str, Any],
    path: tuple[str, ...],
    root: str = "result",
    owner: str = "the flow's ai.output",
) -> str | None:
    """Why ``result.<path>`` (``<root>.<path>``) cannot be in an answer valid for ``schema``
    (what the message calls ``owner``), or None.

    Strict where the schema declares fields (a name not among ``properties`` is a typo, even
    without ``additionalProperties: false``: nothing promises the model adds it), lenient
    where it does not say (``type: object`` alone, ``additionalProperties`` as a schema): the
    path is then accepted from that point on.
    """
    nodes: list[Any] = [schema]
    for depth, segment in enumerate(path):
        where = ".".join((root, *path[:depth]))
        branches = [b for node in nodes for b in _branches(node, schema, 0)]
        children: list[Any] = []
        speaks = False
        for branch in branches:
            found = _children(branch, segment)
            if found is not None:
                speaks = True
                children.extend(found)
        if not speaks:
            kinds = _scalar_types(branches)
            if kinds:
                return f"{where} is {' or '.join(kinds)}: it has no field {segment!r}"
            return None  # the schema does not say what is there: anything may be
        if not children:
            return _no_field(where, segment, branches, root, owner)
        nodes = children
    return None


def _branches(node: Any, root: Mapping[str, Any], depth: int) -> Iterator[Mapping[str, Any]]:
    """``node`` and every schema that also applies to the same value: its ``$ref`` target
    and the branches of ``allOf``/``anyOf``/``oneOf`` (any of which may be the one that
    holds)."""
    if not isinstance(node, Mapping) or depth > 16:
        return
    yield node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        yield from _branches(_pointer(root, ref[1:]), root, depth + 1)
    for keyword in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(keyword) or ():
            yield from _branches(sub, root, depth + 1)


def _pointer(root: Mapping[str, Any], pointer: str) -> Any:
    """A JSON Pointer (RFC 6901) into ``root``; None where it leads nowhere."""
    target: Any = root
    for token in filter(None, pointer.split("/")):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(target, Mapping):
            target = target.get(token)
        elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
            target = target[int(token)]
        else:
            return None
    return target


def _children(schema: Mapping[str, Any], segment: str) -> list[Any] | None:
    """The schemas of ``segment`` under ``schema``: None when ``schema`` says nothing about
    what its values hold, [] when it declares its fields and ``segment`` is not one."""
    properties = schema.get("properties")
    patterns = schema.get("patternProperties")
    extra = schema.get("additionalProperties")
    prefix, items = schema.get("prefixItems"), schema.get("items")
    if segment.isdigit() and (prefix is not None or items is not None):
        if isinstance(prefix, list) and int(segment) < len(prefix):
            return [prefix[int(segment)]]
        return [] if items is False else [items] if isinstance(items, Mapping) else None
    if not segment.isdigit() and schema.get("type") == "array":
        return []
    if properties is None and patterns is None and extra in (None, True):
        return None
    found: list[Any] = []
    if isinstance(properties, Mapping) and segment in properties:
        found.append(properties[segment])
    if isinstance(patterns, Mapping):
        found.extend(s for p, s in patterns.items() if re.search(p, segment))
    if not found and isinstance(extra, Mapping):
        found.append(extra)
    return found


def _scalar_types(branches: list[Mapping[str, Any]]) -> list[str]:
    """The types the schemas pin the value to, when none of them holds fields."""
    kinds: set[str] = set()
    for branch in branches:
        kind = branch.get("type")
        declared = {kind} if isinstance(kind, str) else set(kind or ())
        if declared & {"object", "array"}:
            return []
        kinds |= declared
    articles = {"array": "an array", "integer": "an integer", "object": "an object"}
    return [articles.get(k, f"a {k}") for k in sorted(kinds)]


def _no_field(
    where: str, segment: str, branches: list[Mapping[str, Any]], root: str, owner: str
) -> str:
    known = sorted(
        {name for b in branches for name in (b.get("properties") or {}) if isinstance(name, str)}
    )
    inside = "" if where == root else f" in {where}"
    text = f"{owner} declares no field {segment!r}{inside}"
    if not known:
        return text
    near = difflib.get_close_matches(segment.casefold(), [k.casefold() for k in known], n=1)
    if near:
        spelled = next(k for k in known if k.casefold() == near[0])
        return f"{text}; did you mean {spelled!r}?"
    return f"{text}; it has: {', '.join(known)}"
