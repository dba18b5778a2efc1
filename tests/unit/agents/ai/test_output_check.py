"""The quick check of answers (agents/ai/output_check.py) against jsonschema itself: it may
only say "fits" where jsonschema agrees, and it must say so for the common schemas, or the AI
stage pays jsonschema's full walk again for every answer."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.ai.output import compile_schema, parse_output
from agents.ai.output_check import quick_check
from schemas.errors import InvalidModelOutput
from schemas.output_schema import new_validator

NAMES = ["sentiment", "summary", "score", "tags"]
WORDS = ["positive", "negative", "", "ok", "a" * 12, "ü" * 3]
TYPES = ["string", "integer", "number", "boolean", "null", "array", "object"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.0, 1.0, 2.5, -1.0, 1e300])
    | st.sampled_from(WORDS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(NAMES), inner),
    max_leaves=10,
)


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    typed = st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), min_size=1),
            "enum": st.lists(st.sampled_from([*WORDS, None]), min_size=1),
            "minLength": st.integers(0, 4),
            "maxLength": st.integers(0, 12),
            "description": st.just("annotation only"),
            "format": st.just("date-time"),
        },
    )
    return typed


schemas = st.recursive(
    _leaf(),
    lambda inner: (
        st.fixed_dictionaries(
            {"properties": st.dictionaries(st.sampled_from(NAMES), inner, max_size=3)},
            optional={
                "type": st.just("object"),
                "required": st.lists(st.sampled_from(NAMES), max_size=3, unique=True),
                "additionalProperties": st.booleans(),
            },
        )
        | st.fixed_dictionaries(
            {"items": inner},
            optional={
                "type": st.just("array"),
                "minItems": st.integers(0, 2),
                "maxItems": st.integers(0, 4),
            },
        )
    ),
    max_leaves=6,
)


@settings(max_examples=600, deadline=None)
@given(schema=schemas, answer=json_values)
def test_the_quick_check_never_accepts_what_jsonschema_refuses(
    schema: dict[str, Any], answer: Any
) -> None:
    fits = quick_check(schema)
    assert fits is not None, schema  # every generated schema is within the supported set
    if fits(answer):
        assert new_validator(schema).is_valid(answer), (schema, answer)


SIMPLE = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "summary": {"type": "string", "maxLength": 200, "description": "one line"},
        "score": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    },
    "required": ["sentiment", "summary"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "answer",
    [
        {"sentiment": "negative", "summary": "export broken"},
        {"sentiment": "neutral", "summary": "", "score": 3, "tags": ["a", "b"]},
        {"sentiment": "positive", "summary": "x", "score": 2.0},  # 2.0 is an integer to JSON
    ],
)
def test_a_fitting_answer_to_a_simple_schema_is_accepted_at_once(answer: dict[str, Any]) -> None:
    fits = quick_check(SIMPLE)
    assert fits is not None
    assert fits(answer) is True


@pytest.mark.parametrize(
    "answer",
    [
        {"sentiment": "angry", "summary": "x"},
        {"summary": "x"},
        {"sentiment": "neutral", "summary": "x", "extra": 1},
        {"sentiment": "neutral", "summary": "x", "score": True},
        {"sentiment": "neutral", "summary": "x", "tags": ["a"] * 6},
        {"sentiment": "neutral", "summary": "y" * 201},
    ],
)
def test_a_misfit_is_left_to_jsonschema_which_words_the_error(answer: dict[str, Any]) -> None:
    fits = quick_check(SIMPLE)
    assert fits is not None
    assert fits(answer) is False
    with pytest.raises(InvalidModelOutput, match="does not fit the schema"):
        parse_output(compile_schema("triage", SIMPLE), orjson.dumps(answer).decode())


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "$defs": {"a": {}}},
        {"type": "object", "properties": {"a": {"enum": [1, 2]}}},  # 1 == 1.0 to JSON
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"type": "object", "properties": {"a": {"maxLength": 2.0}}},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
        {"type": "object", "properties": {"a": False}},
    ],
)
def test_a_schema_beyond_the_supported_keywords_is_left_whole_to_jsonschema(
    schema: dict[str, Any],
) -> None:
    assert quick_check(schema) is None


@pytest.mark.parametrize(
    ("kind", "answer"),
    [
        ("number", True),
        ("integer", False),
        ("integer", 2.5),
        ("string", None),
        ("null", 0),
        ("boolean", 1),
        ("object", []),
        ("array", {}),
    ],
)
def test_json_types_are_the_drafts_not_pythons(kind: str, answer: Any) -> None:
    schema = {"type": "object", "properties": {"a": {"type": kind}}}
    fits = quick_check(schema)
    assert fits is not None
    assert fits({"a": answer}) is False
    assert not new_validator(schema).is_valid({"a": answer})
