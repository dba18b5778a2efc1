"""The model's answer against the flow's output schema."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from agents.ai.output import compile_schema, parse_output
from schemas.errors import InvalidModelOutput

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "summary": {"type": "string"},
        "score": {"type": "number"},
        "count": {"type": "integer"},
        "urgent": {"type": "boolean"},
        "tags": {"type": "array"},
        "extra": {"type": "object"},
    },
    "required": ["sentiment", "summary"],
}


@pytest.fixture
def model() -> type[BaseModel]:
    return compile_schema("feedback-triage", SCHEMA)


def rejection(model: type[BaseModel], content: str) -> str:
    with pytest.raises(InvalidModelOutput) as info:
        parse_output(model, content)
    assert info.value.stage == "ai"
    assert info.value.retriable
    return str(info.value)


def test_compiled_model_is_named_after_the_flow(model: type[BaseModel]) -> None:
    assert model.__name__ == "Output_feedback_triage"
    assert set(model.model_fields) == set(SCHEMA["properties"])
    assert model.model_fields["sentiment"].is_required()
    assert not model.model_fields["score"].is_required()


def test_valid_answer_with_all_fields(model: type[BaseModel]) -> None:
    answer = (
        '{"sentiment": "negative", "summary": "Double charge", "score": 0.9, "count": 2,'
        ' "urgent": true, "tags": ["billing"], "extra": {"k": 1}}'
    )
    assert parse_output(model, answer) == {
        "sentiment": "negative",
        "summary": "Double charge",
        "score": 0.9,
        "count": 2,
        "urgent": True,
        "tags": ["billing"],
        "extra": {"k": 1},
    }


def test_optional_fields_default_to_none(model: type[BaseModel]) -> None:
    assert parse_output(model, '{"sentiment": "neutral", "summary": "ok"}') == {
        "sentiment": "neutral",
        "summary": "ok",
        "score": None,
        "count": None,
        "urgent": None,
        "tags": None,
        "extra": None,
    }


def test_extra_keys_are_dropped(model: type[BaseModel]) -> None:
    output = parse_output(
        model, '{"sentiment": "positive", "summary": "x", "reasoning": "long text", "id": 3}'
    )
    assert "reasoning" not in output
    assert "id" not in output
    assert output["sentiment"] == "positive"


def test_enum_violation_names_the_field(model: type[BaseModel]) -> None:
    message = rejection(model, '{"sentiment": "angry", "summary": "x"}')
    assert message.startswith("the answer does not fit the schema: sentiment: ")
    assert "'positive', 'neutral' or 'negative'" in message


def test_missing_required_field_is_named(model: type[BaseModel]) -> None:
    message = rejection(model, '{"sentiment": "positive"}')
    assert "summary: Field required" in message


def test_every_bad_field_is_reported(model: type[BaseModel]) -> None:
    message = rejection(model, '{"sentiment": "meh", "summary": "x", "tags": "billing"}')
    assert "sentiment: " in message
    assert "tags: " in message


def test_wrong_type_is_named(model: type[BaseModel]) -> None:
    message = rejection(model, '{"sentiment": "positive", "summary": ["a", "b"]}')
    assert "summary: Input should be a valid string" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("count", '"42"'), ("urgent", '"yes"'), ("score", '"0.5"')],
)
def test_answer_is_validated_strictly(model: type[BaseModel], field: str, value: str) -> None:
    # The module promises a strict model: a string where the schema says integer/boolean/number
    # is a wrong answer, not something to coerce (see the report: agents/ai/output.py:42).
    message = rejection(model, f'{{"sentiment": "positive", "summary": "x", "{field}": {value}}}')
    assert f"{field}: " in message


def test_integer_is_accepted_for_a_number(model: type[BaseModel]) -> None:
    output = parse_output(model, '{"sentiment": "positive", "summary": "x", "score": 1}')
    assert output["score"] == 1.0


def test_non_json_answer(model: type[BaseModel]) -> None:
    message = rejection(model, "Sure!  The sentiment\n is positive.")
    assert message == "the answer is not JSON: 'Sure! The sentiment is positive.'"


def test_long_non_json_answer_is_shortened(model: type[BaseModel]) -> None:
    message = rejection(model, "word " * 200)
    assert len(message) < 160


def test_json_that_is_not_an_object(model: type[BaseModel]) -> None:
    message = rejection(model, '["positive", "x"]')
    assert message.startswith("the answer does not fit the schema: (answer): ")


@pytest.mark.parametrize(
    "content",
    [
        '```json\n{"sentiment": "positive", "summary": "fenced"}\n```',
        '```\n{"sentiment": "positive", "summary": "fenced"}\n```',
        '  \n```json {"sentiment": "positive", "summary": "fenced"} ```\n',
    ],
)
def test_code_fenced_json_is_accepted(model: type[BaseModel], content: str) -> None:
    assert parse_output(model, content)["summary"] == "fenced"


def test_unclosed_fence_is_not_json(model: type[BaseModel]) -> None:
    rejection(model, '```json\n{"sentiment": "positive", "summary": "x"}')
