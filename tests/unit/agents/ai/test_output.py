"""The model's answer against the flow's output schema: full JSON Schema draft 2020-12."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agents.ai.output import OutputSchema, compile_schema, parse_output
from schemas.errors import InvalidModelOutput

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "summary": {"type": "string"},
        "score": {"type": "number", "minimum": 0, "maximum": 10},
        "count": {"type": "integer"},
        "urgent": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "extra": {"type": "object"},
    },
    "required": ["sentiment", "summary"],
}
VALID = {"sentiment": "negative", "summary": "Double charge"}


def validator(schema: dict[str, Any] | None = None) -> OutputSchema:
    return compile_schema("feedback-triage", schema or SCHEMA)


def answer(**fields: Any) -> str:
    return orjson.dumps({**VALID, **fields}).decode()


def rejection(content: str, schema: dict[str, Any] | None = None) -> str:
    with pytest.raises(InvalidModelOutput) as info:
        parse_output(validator(schema), content)
    assert info.value.stage == "ai"
    assert info.value.retriable
    return str(info.value)


def test_valid_answer_with_all_fields() -> None:
    content = answer(score=0.9, count=2, urgent=True, tags=["billing"], extra={"k": 1})
    assert parse_output(validator(), content) == {
        "sentiment": "negative",
        "summary": "Double charge",
        "score": 0.9,
        "count": 2,
        "urgent": True,
        "tags": ["billing"],
        "extra": {"k": 1},
    }


def test_declared_properties_left_out_are_null() -> None:
    # So a sink template reading an optional result.<field> renders it empty, as before.
    assert parse_output(validator(), answer()) == {
        **VALID,
        "score": None,
        "count": None,
        "urgent": None,
        "tags": None,
        "extra": None,
    }


def test_keys_the_schema_does_not_declare_are_kept() -> None:
    output = parse_output(validator(), answer(reasoning="long text", id=3))
    assert (output["reasoning"], output["id"]) == ("long text", 3)


# --- one test per keyword: each answer would have passed the check before this module -------


def test_maximum() -> None:
    message = rejection(answer(score=999))
    assert message == (
        "the answer does not fit the schema (1 error): "
        "$.score: 999 is greater than the maximum of 10"
    )


def test_minimum() -> None:
    assert "$.score: -1 is less than the minimum of 0" in rejection(answer(score=-1))


def test_items_of_an_array() -> None:
    message = rejection(answer(tags=[1, 2]))
    assert "(2 errors)" in message
    assert "$.tags[0]: 1 is not of type 'string'" in message
    assert "$.tags[1]: 2 is not of type 'string'" in message


NESTED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "tier": {"enum": ["free", "pro"]}},
            "required": ["name"],
        }
    },
    "required": ["customer"],
}


def test_nested_missing_field() -> None:
    message = rejection('{"customer": {"tier": "pro"}}', NESTED)
    assert message.endswith("$.customer: 'name' is a required property")


def test_nested_enum() -> None:
    message = rejection('{"customer": {"name": "Ada", "tier": "gold"}}', NESTED)
    assert "$.customer.tier: 'gold' is not one of ['free', 'pro']" in message


def test_pattern() -> None:
    schema = {"type": "object", "properties": {"ticket": {"type": "string", "pattern": "^T-\\d+$"}}}
    assert parse_output(validator(schema), '{"ticket": "T-42"}') == {"ticket": "T-42"}
    message = rejection('{"ticket": "ticket 42"}', schema)
    assert "$.ticket: 'ticket 42' does not match '^T-\\\\d+$'" in message


def test_additional_properties_false() -> None:
    schema = {**SCHEMA, "additionalProperties": False}
    message = rejection(answer(reasoning="x"), schema)
    assert "$: Additional properties are not allowed ('reasoning' was unexpected)" in message


def test_defs_and_ref() -> None:
    schema = {
        "type": "object",
        "$defs": {"money": {"type": "number", "minimum": 0}},
        "properties": {"refund": {"$ref": "#/$defs/money"}},
    }
    assert parse_output(validator(schema), '{"refund": 12.5}') == {"refund": 12.5}
    assert "$.refund: -3 is less than the minimum of 0" in rejection('{"refund": -3}', schema)


def test_const() -> None:
    schema = {"type": "object", "properties": {"version": {"const": 2}}}
    assert "$.version: 2 was expected" in rejection('{"version": 3}', schema)


def test_missing_required_field_is_named() -> None:
    assert "$: 'summary' is a required property" in rejection('{"sentiment": "positive"}')


def test_enum_violation_names_the_field() -> None:
    message = rejection(answer(sentiment="angry"))
    assert "$.sentiment: 'angry' is not one of ['positive', 'neutral', 'negative']" in message


@pytest.mark.parametrize(("field", "value"), [("count", "42"), ("urgent", "yes"), ("score", "0.5")])
def test_strings_are_not_coerced(field: str, value: str) -> None:
    # A string where the schema says integer/boolean/number is a wrong answer.
    assert f"$.{field}: '{value}' is not of type" in rejection(answer(**{field: value}))


def test_integer_is_accepted_for_a_number() -> None:
    assert parse_output(validator(), answer(score=1))["score"] == 1


def test_every_error_is_listed_sorted_by_path() -> None:
    content = orjson.dumps(
        {"summary": ["a"], "sentiment": "meh", "tags": ["ok", 3], "score": 11}
    ).decode()
    message = rejection(content)
    assert message.startswith("the answer does not fit the schema (4 errors): ")
    listed = message.split(": ", 1)[1].split("; ")
    assert [item.split(":")[0] for item in listed] == [
        "$.score",
        "$.sentiment",
        "$.summary",
        "$.tags[1]",
    ]


def test_indexes_sort_as_numbers() -> None:
    message = rejection(answer(tags=[*(["ok"] * 2), 1, *(["ok"] * 7), 2]))
    assert message.index("$.tags[2]") < message.index("$.tags[10]")


def test_a_long_list_of_errors_is_capped_with_a_count() -> None:
    message = rejection(answer(tags=list(range(200))))
    assert "(200 errors)" in message
    assert "$.tags[49]:" in message
    assert "$.tags[50]:" not in message
    assert message.endswith("and 150 more")


def test_a_long_value_is_shortened_in_its_error() -> None:
    schema = {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 5}}}
    message = rejection(orjson.dumps({"summary": "x" * 5000}).decode(), schema)
    assert "is too long" in message
    assert len(message) < 200


def test_format_is_an_annotation_only() -> None:
    schema = {"type": "object", "properties": {"when": {"type": "string", "format": "date"}}}
    assert parse_output(validator(schema), '{"when": "soon"}') == {"when": "soon"}


def test_non_json_answer() -> None:
    message = rejection("Sure!  The sentiment\n is positive.")
    assert message == "the answer is not JSON: 'Sure! The sentiment is positive.'"


def test_long_non_json_answer_is_shortened() -> None:
    assert len(rejection("word " * 200)) < 160


def test_json_that_is_not_an_object() -> None:
    message = rejection('["positive", "x"]')
    assert message == (
        "the answer does not fit the schema (1 error): $: ['positive', 'x'] is not of type 'object'"
    )


@pytest.mark.parametrize(
    "content",
    [
        '```json\n{"sentiment": "positive", "summary": "fenced"}\n```',
        '```\n{"sentiment": "positive", "summary": "fenced"}\n```',
        '  \n```json {"sentiment": "positive", "summary": "fenced"} ```\n',
    ],
)
def test_code_fenced_json_is_accepted(content: str) -> None:
    assert parse_output(validator(), content)["summary"] == "fenced"


def test_unclosed_fence_is_not_json() -> None:
    assert rejection('```json\n{"sentiment": "positive", "summary": "x"}').startswith(
        "the answer is not JSON"
    )
