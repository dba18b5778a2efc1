"""The condition language of match.where and a sink's when: every operator true and false,
values of other types false rather than errors, and the parse errors with their place."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from schemas.conditions import ConditionError, parse, same

ROOTS = {"event", "data", "result"}
CONTEXT: dict[str, Any] = {
    "event": {"type": "payment.failed", "source": "payments"},
    "data": {
        "amount": 150,
        "ratio": 0.5,
        "currency": "EUR",
        "email": "ana@example.com",
        "test": False,
        "note": None,
        "items": [{"sku": "A-1"}, {"sku": "B-2"}],
        "when": "2026-03-01T10:00:00Z",
    },
    "result": {"sentiment": "negative"},
}


def holds(raw: Any) -> bool:
    return parse(raw, ROOTS).holds(CONTEXT)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"field": "data.currency", "equals": "EUR"}, True),
        ({"field": "data.currency", "equals": "USD"}, False),
        ({"field": "data.amount", "equals": 150.0}, True),  # numbers by value
        ({"field": "data.amount", "equals": "150"}, False),  # a string is not a number
        ({"field": "data.test", "equals": False}, True),
        ({"field": "data.test", "equals": 0}, False),  # a boolean is not a number
        ({"field": "data.note", "equals": None}, True),
        ({"field": "data.items.1.sku", "equals": "B-2"}, True),  # list index
        ({"field": "data.currency", "in": ["USD", "EUR"]}, True),
        ({"field": "data.currency", "in": ["USD", "GBP"]}, False),
        ({"field": "data.amount", "in": [150, 200]}, True),
        ({"field": "data.note", "exists": True}, True),  # there, though null
        ({"field": "data.nothing", "exists": True}, False),
        ({"field": "data.nothing", "exists": False}, True),
        ({"field": "data.currency", "exists": False}, False),
        ({"field": "data.amount", "gt": 100}, True),
        ({"field": "data.amount", "gt": 150}, False),
        ({"field": "data.amount", "ge": 150}, True),
        ({"field": "data.amount", "ge": 151}, False),
        ({"field": "data.ratio", "lt": 1}, True),
        ({"field": "data.ratio", "lt": 0.5}, False),
        ({"field": "data.ratio", "le": 0.5}, True),
        ({"field": "data.ratio", "le": 0.4}, False),
        ({"field": "data.when", "ge": "2026-01-01"}, True),  # strings by code point
        ({"field": "data.when", "lt": "2026-01-01"}, False),
        ({"field": "data.email", "matches": "@example\\.com$"}, True),
        ({"field": "data.email", "matches": "example"}, True),  # a search, not anchored
        ({"field": "data.email", "matches": "^example"}, False),
        ({"field": "event.type", "matches": "^payment\\."}, True),
        ({"field": "result.sentiment", "equals": "negative"}, True),
    ],
)
def test_each_operator(raw: dict[str, Any], expected: bool) -> None:
    assert holds(raw) is expected


@pytest.mark.parametrize(
    "raw",
    [
        {"field": "data.currency", "gt": 100},  # a string and a number: false, not an error
        {"field": "data.currency", "lt": 100},
        {"field": "data.amount", "gt": "100"},
        {"field": "data.test", "lt": 1},  # a boolean is not a number
        {"field": "data.amount", "matches": "150"},  # matches reads strings only
        {"field": "data.items", "ge": 1},
        {"field": "data.note", "gt": 0},
        {"field": "data.nothing", "equals": None},  # missing is not null
        {"field": "data.nothing", "gt": 0},
        {"field": "data.nothing", "matches": ".*"},
        {"field": "data.currency.code", "equals": "EUR"},  # a path through a string
        {"field": "data.items.9.sku", "exists": True},
    ],
)
def test_other_types_and_missing_fields_are_false_not_errors(raw: dict[str, Any]) -> None:
    assert holds(raw) is False


def test_combinators() -> None:
    big = {"field": "data.amount", "gt": 100}
    eur = {"field": "data.currency", "equals": "EUR"}
    usd = {"field": "data.currency", "equals": "USD"}
    assert holds({"all": [big, eur]}) is True
    assert holds({"all": [big, usd]}) is False
    assert holds({"any": [usd, eur]}) is True
    assert holds({"any": [usd, {"not": big}]}) is False
    assert holds({"not": usd}) is True
    assert holds({"not": eur}) is False
    assert holds({"all": [{"any": [usd, eur]}, {"not": {"field": "data.test", "equals": True}}]})


def test_same_is_json_equality() -> None:
    assert same(1, 1.0)
    assert not same(True, 1)
    assert not same(1, True)
    assert same([1, "a"], [1, "a"])
    assert not same("1", 1)
    assert same(None, None)


@pytest.mark.parametrize(
    ("raw", "location", "reason"),
    [
        ("data.x", (), "a condition is a mapping"),
        ({"all": [{"field": "data.a", "gte": 1}]}, ("all", 0, "gte"), "unknown operator 'gte'"),
        ({"field": "data.a", "eq": 1}, ("eq",), "expected one of: equals, in, exists"),
        ({"field": "data.a"}, (), "needs an operator"),
        ({"equals": 1}, (), "missing 'field'"),
        ({"field": "data.a", "gt": 1, "lt": 3}, ("gt",), "one operator per test"),
        ({"field": "data..a", "equals": 1}, ("field",), "dotted field path"),
        ({"field": 3, "equals": 1}, ("field",), "dotted field path"),
        ({"field": "enrichment.a", "equals": 1}, ("field",), "it may use ['data', 'event'"),
        ({"any": []}, ("any",), "any takes a non-empty list"),
        ({"all": {"field": "data.a"}}, ("all",), "all takes a non-empty list"),
        ({"all": [], "field": "data.a"}, (), "'all' stands alone in its mapping"),
        ({"not": {"field": "data.a", "matches": "("}}, ("not", "matches"), "bad regular"),
        ({"field": "data.a", "matches": 3}, ("matches",), "matches takes a regular expression"),
        ({"field": "data.a", "exists": "yes"}, ("exists",), "exists takes true or false"),
        ({"field": "data.a", "in": "EUR"}, ("in",), "in takes a list"),
        ({"field": "data.a", "gt": [1]}, ("gt",), "gt compares with a number or a string"),
        ({"field": "data.a", "lt": True}, ("lt",), "lt compares with a number or a string"),
    ],
)
def test_parse_errors_name_their_place(raw: Any, location: tuple[Any, ...], reason: str) -> None:
    with pytest.raises(ConditionError) as info:
        parse(raw, {"event", "data"})
    assert info.value.location == location
    assert reason in info.value.reason


def test_a_date_yaml_read_unquoted_is_refused_with_a_hint() -> None:
    with pytest.raises(ConditionError) as info:
        parse({"field": "data.when", "ge": datetime.date(2026, 1, 1)}, ROOTS)
    assert "write it in quotes" in info.value.reason


def test_tests_lists_every_test_with_its_place() -> None:
    parsed = parse(
        {"all": [{"field": "result.a", "equals": 1}, {"not": {"field": "data.b", "exists": True}}]},
        ROOTS,
    )
    assert [(at, t.path) for at, t in parsed.tests(("when",))] == [
        (("when", "all", 0), ("result", "a")),
        (("when", "all", 1, "not"), ("data", "b")),
    ]
