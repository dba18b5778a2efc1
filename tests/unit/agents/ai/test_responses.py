"""OpenAI's Responses API: the client's request body and answer parsing, the simulator's
request parser, and the provider options' config errors (file, line, field, reason)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from agents.ai.provider import ChatRequest
from agents.ai.responses import OpenAIResponses, ResponseIds, answer_text
from schemas.config_ai import ProviderConfig
from streams.dev._simcommon import SimError
from streams.dev.ai_sim_logic import analyse
from streams.dev.ai_sim_responses import (
    complete_body,
    fail_body,
    parse_responses_request,
    response_body,
)
from tests.support.ai_stack import MemoryMap
from tests.unit.schemas.test_config_loader import VALID, VALID_ENV, problems_of, write

SCHEMA = {"type": "object", "properties": {"summary": {"type": "string"}}}


def request(**changes: Any) -> ChatRequest:
    base = ChatRequest(
        model="gpt-x",
        system="Be brief.",
        prompt="The refund never arrived.",
        schema_name="triage",
        schema=SCHEMA,
        temperature=0.0,
        max_tokens=64,
    )
    return dataclasses.replace(base, **changes)


def client(**options: Any) -> OpenAIResponses:
    provider = ProviderConfig(
        name="p", base_url="http://127.0.0.1:1/v1", model="gpt-x", api="responses", **options
    )
    return OpenAIResponses(provider, session=None)  # type: ignore[arg-type]


def test_payload_is_a_responses_api_body() -> None:
    body = client().payload(request())
    assert body == {
        "model": "gpt-x",
        "input": [{"role": "user", "content": "The refund never arrived."}],
        "instructions": "Be brief.",
        "temperature": 0.0,
        "max_output_tokens": 64,
        "text": {
            "format": {"type": "json_schema", "name": "triage", "schema": SCHEMA, "strict": False}
        },
    }
    assert client().url == "http://127.0.0.1:1/v1/responses"


def test_payload_without_structured_output_puts_the_schema_in_the_instructions() -> None:
    body = client(structured_output="instruction").payload(request())
    assert "text" not in body
    assert body["instructions"].startswith("Be brief.\n\nAnswer with only a JSON object")


def test_the_simulator_parses_what_the_client_sends() -> None:
    reask = request().reask('{"summary": 1}', "summary: 1 is not of type 'string'")
    parsed = parse_responses_request({**client().payload(reask), "background": True})
    assert parsed.background
    assert parsed.chat.model == "gpt-x"
    assert parsed.chat.schema == SCHEMA
    assert parsed.chat.max_tokens == 64
    assert [role for role, _ in parsed.chat.texts] == ["system", "user", "assistant", "user"]
    assert parsed.chat.user_text == "The refund never arrived."  # the question, not the re-ask


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": "hi"}, "Missing required parameter: 'model'."),
        ({"model": "m"}, "'input' must be a string or a non-empty list"),
        ({"model": "m", "input": [{"role": "bot", "content": "x"}]}, "input[0].role must be"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "image"}]}]},
            "input[0].content[0].type must be 'input_text' or 'output_text'",
        ),
        (
            {"model": "m", "input": "x", "background": True, "store": False},
            "Background mode requires 'store' to be true.",
        ),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}},
            "text.format.name is required",
        ),
        ({"model": "m", "input": "x", "max_output_tokens": 8}, "'max_output_tokens' must be"),
    ],
)
def test_the_simulator_refuses_a_malformed_request(body: dict[str, Any], message: str) -> None:
    with pytest.raises(SimError) as info:
        parse_responses_request(body)
    assert info.value.status == 400
    assert info.value.message.startswith(message)


def test_answer_text_reads_the_output_text_of_a_completed_response() -> None:
    parsed = parse_responses_request(client().payload(request()))
    body = response_body(parsed, "resp_1", "queued")
    assert body["status"] == "queued"
    assert body["output"] == []
    assert body["usage"] is None
    complete_body(body, parsed.chat, analyse(parsed.chat.user_text))
    assert body["status"] == "completed"
    assert body["output"][0]["type"] == "message"
    assert answer_text(body) == '{"summary":"The refund never arrived."}'
    usage: dict[str, Any] = body.get("usage") or {}
    assert usage["input_tokens"] > 0
    assert client().token_usage(body) == (usage["input_tokens"], usage["output_tokens"])


def test_answer_text_of_a_response_without_output_text_is_an_error() -> None:
    parsed = parse_responses_request({"model": "m", "input": "x"})
    body = response_body(parsed, "resp_1", "in_progress")
    fail_body(body)
    with pytest.raises(TypeError, match="no output_text in a response with status 'failed'"):
        answer_text(body)
    refusal = {"status": "completed", "output": [{"type": "message", "content": [
        {"type": "refusal", "refusal": "I cannot help with that."}]}]}  # fmt: skip
    with pytest.raises(TypeError):
        answer_text(refusal)


def test_the_recorded_key_tells_requests_apart_and_repeats_for_the_same_one() -> None:
    ids = ResponseIds("done/triage/helpdesk/ev-1", store=MemoryMap(), writer=None)
    c = client(background=True)
    first = ids.key(c.payload(request()))
    assert first == ids.key(c.payload(request()))  # the restarted worker finds it
    assert first.startswith("responses/done/triage/helpdesk/ev-1/")
    reask = request().reask("{}", "summary is required")
    assert ids.key(c.payload(reask)) != first  # a re-ask is a new response
    assert ids.key(c.payload(request(model="gpt-y"))) != first  # so is another model
    other = ResponseIds("done/triage/helpdesk/ev-2", store=MemoryMap(), writer=None)
    assert other.key(c.payload(request())) != first


PROVIDER = "    model: sim-1\n"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            "    background: true\n",
            "background: true needs api: responses (provider default calls chat_completions, "
            "which has no background mode)",
        ),
        (
            "    kind: anthropic\n    api: responses\n",
            "api: responses is OpenAI's Responses API; provider default has kind anthropic "
            "(use kind: openai, or drop api)",
        ),
        (
            "    api: responses\n    background: true\n    background_poll_s: 10\n",
            "background_poll_max_s (5) is shorter than background_poll_s (10)",
        ),
    ],
)
def test_background_options_that_do_not_fit_are_config_errors(
    tmp_path: Path, extra: str, problem: str
) -> None:
    path = write(tmp_path, VALID.replace(PROVIDER, PROVIDER + extra))
    (found,) = problems_of(path, VALID_ENV)
    assert found.startswith(f"{path}:9: providers[0]: ")
    assert found.endswith(problem)


def test_an_unknown_api_is_a_config_error_naming_the_choices(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace(PROVIDER, PROVIDER + "    api: assistants\n"))
    (found,) = problems_of(path, VALID_ENV)
    assert found.startswith(f"{path}:13: providers[0].api: ")
    assert found.endswith(
        "providers[0].api: unknown provider api 'assistants'; expected one of: "
        "chat_completions, responses"
    )
