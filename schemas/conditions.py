"""The condition language of ``match.where`` and a sink's ``when``: YAML data, not code.

A condition is a mapping, parsed and checked when the config loads (an unknown operator, a bad
regular expression or a value of the wrong type is a config error naming its file, line and
place in the condition), and evaluated against an event (or a result) without running anything
a config author wrote::

    where:
      all:
        - {field: data.amount, gt: 100}
        - {field: data.currency, in: [EUR, USD]}
        - not: {field: data.test, equals: true}

A test is ``{field: <dotted path>, <operator>: <value>}`` with exactly one operator:

- ``equals``: the field's value is this value (JSON equality: ``1`` equals ``1.0``, but
  ``true`` is not ``1`` and ``"1"`` is not ``1``);
- ``in``: it equals one of the list's values;
- ``exists``: ``true``: the field is there (even if null); ``false``: it is not;
- ``lt``, ``le``, ``gt``, ``ge``: ``<``, ``<=``, ``>``, ``>=`` between two numbers, or between two
  strings (by code point: ISO 8601 times in one format compare as times);
- ``matches``: the field is a string in which the regular expression (Python's ``re``) finds a
  match anywhere (a search, as grep does); anchor it with ``^…$`` to match the whole string.

Combinators: ``all`` (every condition of a non-empty list holds), ``any`` (one of them does),
``not`` (the condition does not hold).

A field that is not there makes every test false except ``exists: false``; a value of another
type than the operator compares (a string ``gt`` a number, a number ``matches`` a pattern) makes
the test false too, never an error: an event is data from outside, and one odd payload must not
dead-letter or stop a flow. Paths are those of templates (:mod:`schemas.templates`): dotted
names, integer segments index lists.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from schemas import templates
from schemas.config_messages import suggestion
from schemas.errors import TemplateError

Location = tuple[str | int, ...]

COMPARISONS = ("lt", "le", "gt", "ge")
OPERATORS = ("equals", "in", "exists", *COMPARISONS, "matches")
COMBINATORS = ("all", "any", "not")
_SHAPE = "{field: <path>, <operator>: <value>} or one of all, any, not"


class ConditionError(ValueError):
    """A condition the loader refuses: ``location`` is where inside the condition, so the
    config error can name the line."""

    def __init__(self, location: Location, reason: str) -> None:
        super().__init__(reason)
        self.location = location
        self.reason = reason


class Condition(ABC):
    """A parsed condition: :meth:`holds` on a render context (``event``, ``data``, …)."""

    @abstractmethod
    def holds(self, context: Mapping[str, Any]) -> bool:
        """Whether the condition is true for ``context``; never raises on odd data."""

    @abstractmethod
    def tests(self, location: Location = ()) -> Iterator[tuple[Location, FieldTest]]:
        """Every test inside, with its place in the condition (for load-time checks)."""


@dataclass(frozen=True, slots=True)
class All(Condition):
    conditions: tuple[Condition, ...]

    def holds(self, context: Mapping[str, Any]) -> bool:
        return all(c.holds(context) for c in self.conditions)

    def tests(self, location: Location = ()) -> Iterator[tuple[Location, FieldTest]]:
        for index, condition in enumerate(self.conditions):
            yield from condition.tests((*location, "all", index))


@dataclass(frozen=True, slots=True)
class AnyOf(Condition):
    conditions: tuple[Condition, ...]

    def holds(self, context: Mapping[str, Any]) -> bool:
        return any(c.holds(context) for c in self.conditions)

    def tests(self, location: Location = ()) -> Iterator[tuple[Location, FieldTest]]:
        for index, condition in enumerate(self.conditions):
            yield from condition.tests((*location, "any", index))


@dataclass(frozen=True, slots=True)
class Not(Condition):
    condition: Condition

    def holds(self, context: Mapping[str, Any]) -> bool:
        return not self.condition.holds(context)

    def tests(self, location: Location = ()) -> Iterator[tuple[Location, FieldTest]]:
        yield from self.condition.tests((*location, "not"))


_MISSING = object()


@dataclass(frozen=True, slots=True)
class FieldTest(Condition):
    """``{field: path, operator: value}``; ``pattern`` is the compiled ``matches`` value."""

    path: tuple[str, ...]
    operator: str
    value: Any
    pattern: re.Pattern[str] | None = None

    def holds(self, context: Mapping[str, Any]) -> bool:
        try:
            found = templates.lookup(context, self.path)
        except TemplateError:
            found = _MISSING
        if self.operator == "exists":
            return (found is not _MISSING) is self.value
        if found is _MISSING:
            return False
        if self.operator == "equals":
            return same(found, self.value)
        if self.operator == "in":
            return any(same(found, choice) for choice in self.value)
        if self.pattern is not None:  # matches
            return isinstance(found, str) and self.pattern.search(found) is not None
        return compare(found, self.operator, self.value)

    def tests(self, location: Location = ()) -> Iterator[tuple[Location, FieldTest]]:
        yield location, self


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def same(left: Any, right: Any) -> bool:
    """JSON equality: numbers by value (``1 == 1.0``), but a boolean equals only a boolean
    (Python's ``True == 1`` would let ``equals: 1`` take ``true``)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if type(left) is not type(right):
        return False
    return bool(left == right)


def compare(left: Any, operator: str, right: Any) -> bool:
    """``left <operator> right`` for two numbers or two strings; False for any other pair."""
    both_numbers = _is_number(left) and _is_number(right)
    if not (both_numbers or (isinstance(left, str) and isinstance(right, str))):
        return False
    if operator == "lt":
        return bool(left < right)
    if operator == "le":
        return bool(left <= right)
    if operator == "gt":
        return bool(left > right)
    return bool(left >= right)


def parse(raw: Any, roots: set[str], location: Location = ()) -> Condition:
    """``raw`` (YAML data) as a condition over the context ``roots``; raise
    :class:`ConditionError` at the first problem, with its place inside ``raw``."""
    if not isinstance(raw, Mapping):
        raise ConditionError(location, f"a condition is a mapping: {_SHAPE}")
    combinators = [key for key in COMBINATORS if key in raw]
    if combinators:
        key = combinators[0]
        others = sorted(str(k) for k in raw if k != key)
        if others:
            raise ConditionError(
                location,
                f"{key!r} stands alone in its mapping; found also {', '.join(others)} "
                "(put each condition in the list of all or any)",
            )
        value = raw[key]
        here = (*location, key)
        if key == "not":
            return Not(parse(value, roots, here))
        if not isinstance(value, list) or not value:
            raise ConditionError(here, f"{key} takes a non-empty list of conditions")
        parsed = tuple(parse(item, roots, (*here, i)) for i, item in enumerate(value))
        return All(parsed) if key == "all" else AnyOf(parsed)
    return _test(raw, roots, location)


def _test(raw: Mapping[Any, Any], roots: set[str], location: Location) -> FieldTest:
    for key in raw:
        if key != "field" and key not in OPERATORS:
            known = (*OPERATORS, *COMBINATORS, "field")
            near = suggestion(str(key), known)
            hint = f" (did you mean {near!r}?)" if near else ""
            raise ConditionError(
                (*location, str(key)),
                f"unknown operator {str(key)!r}{hint}; expected one of: "
                f"{', '.join(OPERATORS)} (beside field), or all, any, not",
            )
    if "field" not in raw:
        raise ConditionError(location, f"missing 'field': a condition is {_SHAPE}")
    path = _path(raw["field"], roots, (*location, "field"))
    operators = [key for key in OPERATORS if key in raw]
    if not operators:
        raise ConditionError(location, f"needs an operator: one of {', '.join(OPERATORS)}")
    if len(operators) > 1:
        raise ConditionError(
            (*location, operators[1]),
            f"one operator per test, found {' and '.join(operators)}: combine tests with all",
        )
    operator = operators[0]
    value = raw[operator]
    here = (*location, operator)
    pattern = None
    if operator == "exists" and not isinstance(value, bool):
        raise ConditionError(here, f"exists takes true or false, got {value!r}")
    if operator == "in" and not isinstance(value, list):
        raise ConditionError(here, f"in takes a list of values, got {value!r}")
    if operator in COMPARISONS and not (_is_number(value) or isinstance(value, str)):
        quote = " (write it in quotes)" if not isinstance(value, bool) else ""
        raise ConditionError(
            here, f"{operator} compares with a number or a string, got {value!r}{quote}"
        )
    if operator == "matches":
        if not isinstance(value, str):
            raise ConditionError(here, f"matches takes a regular expression, got {value!r}")
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ConditionError(here, f"bad regular expression {value!r}: {exc}") from None
    if operator in ("equals", "in"):
        for item in value if operator == "in" else [value]:
            if not isinstance(item, str | int | float | bool | list | dict) and item is not None:
                raise ConditionError(
                    here,
                    f"{operator} takes JSON values, got {item!r} (write it in quotes)",
                )
    return FieldTest(path, operator, tuple(value) if operator == "in" else value, pattern)


def _path(raw: Any, roots: set[str], location: Location) -> tuple[str, ...]:
    if not isinstance(raw, str) or not templates.PATH.match(raw):
        raise ConditionError(
            location, f"field must be a dotted field path like data.customer_id, got {raw!r}"
        )
    path = tuple(raw.split("."))
    if path[0] not in roots:
        raise ConditionError(
            location, f"field {raw!r} starts with {path[0]!r}; it may use {sorted(roots)}"
        )
    return path


def check(raw: Any, roots: set[str]) -> Condition | None:
    """For a model's validator: the parsed condition (None when ``raw`` is None), or a
    pydantic error whose location goes on inside the field, so the config error names the
    line of the very operator or value at fault."""
    if raw is None:
        return None
    try:
        return parse(raw, roots)
    except ConditionError as exc:
        error = PydanticCustomError("condition", "{reason}", {"reason": exc.reason})
        details = InitErrorDetails(type=error, loc=exc.location, input=raw)
        raise ValidationError.from_exception_data("condition", [details]) from None
