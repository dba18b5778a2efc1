"""The AI simulator's pure logic: keyword analysis, schema-driven answers, token counts.

Pipeline tests assert on what the simulated model answers, so these rules are a contract: the same
text must always give the same sentiment, category and summary.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from streams.dev._simcommon import SimError
from streams.dev.ai_sim import (
    SUMMARY_MAX_CHARS,
    AISimSettings,
    Analysis,
    analyse,
    build_output,
    completion_body,
    count_tokens,
    parse_chat_request,
    summarise,
)


@pytest.mark.parametrize(
    ("text", "sentiment"),
    [
        ("I love this product, thanks a lot!", "positive"),
        ("The export is broken and I want a refund.", "negative"),
        ("Please change my address.", "neutral"),
        ("Great app but the sync is slow.", "neutral"),  # one each way: a tie
        ("Great, great, but slow.", "positive"),
        ("", "neutral"),
    ],
)
def test_sentiment_from_lexicon(text: str, sentiment: str) -> None:
    assert analyse(text).sentiment == sentiment


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("I was charged twice on my last invoice.", "billing"),
        ("The app crashes with an error on startup.", "bug"),
        ("Could you add a dark mode feature?", "feature_request"),
        ("I cannot reset my password for my account.", "account"),
        ("What time is it in Lisbon?", "other"),
        ("", "other"),
    ],
)
def test_category_from_keywords(text: str, category: str) -> None:
    assert analyse(text).category == category


def test_category_tie_goes_to_the_earlier_category() -> None:
    # one billing word ("invoice") and one bug word ("crash"): billing is listed first
    assert analyse("The invoice page shows a crash").category == "billing"


def test_words_match_whole_words_case_insensitively() -> None:
    assert analyse("LOVE it").sentiment == "positive"
    assert analyse("lovely weather").sentiment == "neutral"  # "lovely" is not "love"


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("love", 1.0),
        ("broken", -1.0),
        ("nothing to see", 0.0),
        ("love great broken", 0.333),
        ("love broken terrible", -0.333),
    ],
)
def test_score_is_the_balance_of_hits(text: str, score: float) -> None:
    result = analyse(text)
    assert result.score == score
    assert -1.0 <= result.score <= 1.0
    assert (result.score > 0) == (result.sentiment == "positive")
    assert (result.score < 0) == (result.sentiment == "negative")


def test_analysis_is_deterministic() -> None:
    text = "Thanks for the quick fix! The invoice export was broken for a week."
    assert analyse(text) == analyse(text)
    assert analyse(text) == Analysis(
        sentiment="neutral",
        category="billing",
        summary="Thanks for the quick fix!",
        score=0.0,
    )


def test_summary_is_the_first_sentence_with_whitespace_collapsed() -> None:
    assert summarise("  Hello\n\n  there.   Second sentence.") == "Hello there."
    assert summarise("No terminator at all") == "No terminator at all"
    assert summarise("Version 2.1 is out? Yes.") == "Version 2.1 is out?"
    assert summarise("") == ""


def test_long_summary_is_cut_at_a_word_to_the_limit() -> None:
    text = " ".join(["word"] * 100)
    summary = summarise(text)
    assert len(summary) <= SUMMARY_MAX_CHARS
    assert summary.endswith("word…")
    one_long_word = "x" * 500
    assert len(summarise(one_long_word)) == SUMMARY_MAX_CHARS


NEGATIVE_BILLING = Analysis("negative", "billing", "I was charged twice.", -1.0)


def test_output_without_schema_has_the_four_fields() -> None:
    assert build_output(None, NEGATIVE_BILLING) == {
        "sentiment": "negative",
        "category": "billing",
        "summary": "I was charged twice.",
        "score": -1.0,
    }


def test_output_has_exactly_the_schema_properties_filled_by_type() -> None:
    schema = {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string"},
            "category": {"type": "string"},
            "summary": {"type": "string"},
            "score": {"type": "number"},
            "headline": {"type": "string"},
            "urgency": {"type": "number"},
            "stars": {"type": "integer"},
            "is_happy": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["sentiment"],
    }
    assert build_output(schema, NEGATIVE_BILLING) == {
        "sentiment": "negative",
        "category": "billing",
        "summary": "I was charged twice.",
        "score": -1.0,
        "headline": "I was charged twice.",
        "urgency": -1.0,
        "stars": -1,
        "is_happy": False,
        "tags": [],
    }


def test_enum_uses_the_analysed_value_when_allowed_else_the_first_value() -> None:
    schema = {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
            "category": {"type": "string", "enum": ["shipping", "returns"]},
            "priority": {"type": "string", "enum": ["low", "high"]},
        },
    }
    assert build_output(schema, NEGATIVE_BILLING) == {
        "sentiment": "negative",
        "category": "shipping",
        "priority": "low",
    }


def test_integer_score_and_bounds_are_respected() -> None:
    positive = Analysis("positive", "other", "Nice.", 0.6)
    schema = {
        "type": "object",
        "properties": {
            "score": {"type": "integer"},
            "confidence": {"type": "number", "minimum": 0.8, "maximum": 1},
            "summary": {"type": "string", "maxLength": 4},
            "happy": {"type": "boolean"},
        },
    }
    out = build_output(schema, positive)
    assert out == {"score": 1, "confidence": 0.8, "summary": "Nice", "happy": True}
    assert isinstance(out["score"], int)


class Sentiment(Enum):
    POSITIVE = "positive"
    NEUTRAL = "neutral"
    NEGATIVE = "negative"


class Details(BaseModel):
    reason: str
    severity: int


class Triage(BaseModel):
    sentiment: Sentiment
    summary: str | None
    details: Details


def test_pydantic_schema_refs_and_optionals_are_followed() -> None:
    schema = Triage.model_json_schema()  # $defs for the enum and the nested model, anyOf for None
    out = build_output(schema, NEGATIVE_BILLING)
    assert out == {
        "sentiment": "negative",
        "summary": "I was charged twice.",
        "details": {"reason": "I was charged twice.", "severity": -1},
    }
    Triage.model_validate(out)


def test_token_counts_are_a_started_token_per_four_chars() -> None:
    assert [count_tokens("x" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def _request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are a triage bot. Answer in JSON."},
            {"role": "user", "content": "first user message, I love it"},
            {"role": "assistant", "content": "{}"},
            {"role": "user", "content": "The app is broken."},
        ],
    }
    body.update(overrides)
    return body


def test_only_the_last_user_message_is_analysed() -> None:
    chat = parse_chat_request(_request())
    assert chat.model == "gpt-test"
    assert chat.user_text == "The app is broken."
    assert chat.schema is None


def test_content_parts_are_joined() -> None:
    parts = [
        {"type": "text", "text": "Hello"},
        {"type": "image_url"},
        {"type": "text", "text": "!"},
    ]
    chat = parse_chat_request(_request(messages=[{"role": "user", "content": parts}]))
    assert chat.user_text == "Hello\n!"


def test_json_schema_response_format_is_extracted() -> None:
    schema = {"type": "object", "properties": {"summary": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}}
    assert parse_chat_request(_request(response_format=fmt)).schema == schema
    json_object = parse_chat_request(_request(response_format={"type": "json_object"}))
    assert json_object.schema is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "invalid_body"),
        ({"messages": [{"role": "user", "content": "x"}]}, "missing_model"),
        ({"model": "m"}, "invalid_messages"),
        ({"model": "m", "messages": []}, "invalid_messages"),
        ({"model": "m", "messages": ["hi"]}, "invalid_messages"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "invalid_content"),
        (_request(response_format={"type": "xml"}), "invalid_response_format"),
        (_request(response_format={"type": "json_schema"}), "invalid_response_format"),
        (
            _request(response_format={"type": "json_schema", "json_schema": {"name": "t"}}),
            "invalid_response_format",
        ),
    ],
)
def test_invalid_requests_are_400_naming_the_field(body: Any, code: str) -> None:
    with pytest.raises(SimError) as caught:
        parse_chat_request(body)
    assert caught.value.status == 400
    assert caught.value.code == code


def test_completion_body_is_deterministic_apart_from_created() -> None:
    chat = parse_chat_request(_request())
    first = completion_body(chat, '{"a": 1}', "ab" * 32)
    second = completion_body(chat, '{"a": 1}', "ab" * 32)
    first.pop("created")
    second.pop("created")
    assert first == second
    assert first["id"] == "chatcmpl-" + "ab" * 12
    assert first["model"] == "gpt-test"
    assert first["choices"][0]["message"] == {
        "role": "assistant",
        "content": '{"a": 1}',
        "refusal": None,
    }
    assert first["choices"][0]["finish_reason"] == "stop"
    all_text = "".join(str(m["content"]) for m in _request()["messages"])
    assert first["usage"] == {
        "prompt_tokens": count_tokens(all_text),
        "completion_tokens": count_tokens('{"a": 1}'),
        "total_tokens": count_tokens(all_text) + count_tokens('{"a": 1}'),
    }


def test_fault_rates_must_share_one_draw() -> None:
    AISimSettings(rate_429=0.5, rate_500=0.3, rate_malformed=0.2)
    with pytest.raises(ValidationError, match="must not exceed 1"):
        AISimSettings(rate_429=0.5, rate_500=0.6)
