"""The AI simulator's pure logic: what it "understands" of a text and how it answers.

No I/O here, so the unit tests pin the answers down exactly. Two wire formats share one
analysis: OpenAI chat completions (``response_format: json_schema`` shapes the answer) and
Anthropic Messages (a forced tool call's ``input_schema`` shapes it). The server is
:mod:`streams.dev.ai_sim`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from streams.dev._simcommon import SimError

SIM_MODEL = "sim-1"
# How hookstream's AI stage starts the correction it sends after an invalid answer
# (agents.ai.provider.ChatRequest.reask).
REASK_PREFIX = "That answer is not valid:"
SUMMARY_MAX_CHARS = 120

Sentiment = Literal["positive", "neutral", "negative"]
SENTIMENTS: tuple[Sentiment, ...] = ("positive", "neutral", "negative")
CATEGORIES = ("billing", "bug", "feature_request", "account", "other")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Exact lowercase words (inflections listed rather than stemmed, so matches are easy to predict).
_POSITIVE = _words(
    "love loved loves great thanks thank excellent happy awesome amazing perfect fantastic "
    "wonderful helpful appreciate appreciated good nice glad pleased"
)
_NEGATIVE = _words(
    "broken refund refunded angry terrible cancel cancelled canceled cancelling failed fails "
    "failing failure slow bug bugs buggy crash crashes crashed error errors awful bad hate "
    "worst frustrated frustrating disappointed useless unacceptable"
)
# Dict order is the tie-break priority between categories.
_CATEGORY_WORDS: dict[str, frozenset[str]] = {
    "billing": _words(
        "billing bill billed invoice invoices charge charged charges payment payments paid pay "
        "refund refunded price pricing subscription card receipt"
    ),
    "bug": _words(
        "bug bugs buggy crash crashes crashed error errors broken exception fails failed "
        "failing glitch freezes"
    ),
    "feature_request": _words(
        "feature features wish suggestion suggest add adding roadmap integration"
    ),
    "account": _words("account login log password username profile signin locked 2fa sso email"),
}
_WORD = re.compile(r"[a-z0-9']+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the simulated model "understood" of a text."""

    sentiment: Sentiment
    category: str
    summary: str
    score: float  # in [-1, 1]; > 0 exactly when sentiment is positive

    def as_dict(self) -> dict[str, Any]:
        return {
            "sentiment": self.sentiment,
            "category": self.category,
            "summary": self.summary,
            "score": self.score,
        }


def summarise(text: str, max_chars: int = SUMMARY_MAX_CHARS) -> str:
    """First sentence, whitespace collapsed, cut at a word boundary to ``max_chars``."""
    flat = " ".join(text.split())
    first = _SENTENCE_END.split(flat, maxsplit=1)[0]
    if len(first) <= max_chars:
        return first
    cut = first[: max_chars - 1]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut + "…"


def analyse(text: str) -> Analysis:
    """Deterministic keyword analysis: the same text always gives the same answer."""
    words = _WORD.findall(text.lower().replace("\u2019", "'"))
    positive = sum(w in _POSITIVE for w in words)
    negative = sum(w in _NEGATIVE for w in words)
    score = round((positive - negative) / (positive + negative), 3) if positive + negative else 0.0
    sentiment: Sentiment = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    hits = {name: sum(w in vocab for w in words) for name, vocab in _CATEGORY_WORDS.items()}
    best = max(hits.values(), default=0)
    category = next((n for n, c in hits.items() if c == best), "other") if best else "other"
    return Analysis(sentiment, category, summarise(text), score)


def count_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: one token per started 4 characters."""
    return (len(text) + 3) // 4


# --- schema-driven output ------------------------------------------------------------------

_MAX_SCHEMA_DEPTH = 8


def _resolve(prop: Any, root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local ``$ref`` and pick the first non-null branch of ``anyOf``/``oneOf``.

    Pydantic's ``model_json_schema()`` emits both (enums as ``$defs``, ``X | None`` as anyOf).
    """
    for _ in range(_MAX_SCHEMA_DEPTH):
        if not isinstance(prop, Mapping):
            return {}
        ref = prop.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                target = target.get(part) if isinstance(target, Mapping) else None
            prop = target
            continue
        branches = prop.get("anyOf") or prop.get("oneOf") or prop.get("allOf")
        if isinstance(branches, list) and branches:
            non_null = [
                b for b in branches if not (isinstance(b, Mapping) and b.get("type") == "null")
            ]
            prop = non_null[0] if non_null else branches[0]
            continue
        return prop
    return {}


def _main_type(prop: Mapping[str, Any]) -> str | None:
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return kind if isinstance(kind, str) else None


def _value_for(
    name: str | None, prop: Any, analysis: Analysis, root: Mapping[str, Any], depth: int
) -> Any:
    spec = _resolve(prop, root)
    if "const" in spec:
        return spec["const"]
    kind = _main_type(spec)
    if kind == "object":
        props = spec.get("properties")
        if not isinstance(props, Mapping) or depth >= _MAX_SCHEMA_DEPTH:
            return {}
        return {key: _value_for(key, sub, analysis, root, depth + 1) for key, sub in props.items()}
    if kind == "array":
        return []
    if kind == "null":
        return None
    value: Any
    if name in ("sentiment", "category", "summary") and kind in (None, "string"):
        value = getattr(analysis, name)
    elif kind == "boolean":
        value = analysis.sentiment == "positive"
    elif kind == "integer":
        value = round(analysis.score)
    elif kind == "number" or (name == "score" and kind is None):
        value = analysis.score
    else:
        value = analysis.summary
    enum = spec.get("enum")
    if isinstance(enum, list) and enum:
        return value if value in enum else enum[0]
    if isinstance(value, str) and isinstance(spec.get("maxLength"), int):
        value = value[: spec["maxLength"]]
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = spec.get("minimum"), spec.get("maximum")
        value = max(value, low) if isinstance(low, int | float) else value
        value = min(value, high) if isinstance(high, int | float) else value
    return value


def build_output(schema: Mapping[str, Any] | None, analysis: Analysis) -> dict[str, Any]:
    """The answer object: exactly the schema's properties, or the four analysis fields."""
    if schema is None or not isinstance(schema.get("properties"), Mapping):
        return analysis.as_dict()
    result = _value_for(None, {**schema, "type": "object"}, analysis, schema, 0)
    assert isinstance(result, dict)  # noqa: S101 - forced "type": "object" above
    return result


# --- request parsing -----------------------------------------------------------------------


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    raise SimError(
        400, "messages[].content must be a string, a list of parts or null", code="invalid_content"
    )


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    texts: tuple[tuple[str, str], ...]  # (role, text) per message
    schema: Mapping[str, Any] | None
    max_tokens: int = 0  # the completion allowance asked for (0: none given)

    @property
    def prompt_tokens(self) -> int:
        """What the answer's usage reports as prompt tokens."""
        return count_tokens("".join(text for _, text in self.texts))

    @property
    def user_text(self) -> str:
        """The last user message: the sim analyses only it (instructions live in ``system``).

        Except a re-ask's correction (hookstream's starts with :data:`REASK_PREFIX`): the
        question is still the user message before it.
        """
        users = [text for role, text in self.texts if role == "user"]
        while len(users) > 1 and users[-1].startswith(REASK_PREFIX):
            users.pop()
        return users[-1] if users else ""


def parse_chat_request(data: Any) -> ChatRequest:
    """Validate an OpenAI chat request body; :class:`SimError` 400 names the field at fault."""
    if not isinstance(data, dict):
        raise SimError(400, "request body must be a JSON object", code="invalid_body")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise SimError(400, "'model' is required and must be a string", code="missing_model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SimError(400, "'messages' must be a non-empty list", code="invalid_messages")
    texts: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise SimError(
                400, f"messages[{i}] must be an object with a 'role'", code="invalid_messages"
            )
        texts.append((message["role"], _content_text(message.get("content"))))
    return ChatRequest(
        model, tuple(texts), _response_schema(data.get("response_format")), _max_tokens(data)
    )


def _max_tokens(data: Mapping[str, Any]) -> int:
    """``max_completion_tokens`` (OpenAI's newer name) or ``max_tokens``; 0 when absent."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = data.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SimError(400, f"'{name}' must be a positive integer", code="invalid_value")
            return value
    return 0


def _response_schema(response_format: Any) -> Mapping[str, Any] | None:
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in ("text", "json_object"):
        return None
    if kind != "json_schema":
        raise SimError(
            400,
            "response_format.type must be one of 'text', 'json_object', 'json_schema'",
            code="invalid_response_format",
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise SimError(
            400, "response_format.json_schema.name is required", code="invalid_response_format"
        )
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise SimError(
            400,
            "response_format.json_schema.schema must be an object",
            code="invalid_response_format",
        )
    return schema


def completion_body(request: ChatRequest, content: str, request_digest: str) -> dict[str, Any]:
    """A ``chat.completion`` object; token counts are a pure function of the texts."""
    prompt_tokens = request.prompt_tokens
    completion_tokens = count_tokens(content)
    return {
        "id": f"chatcmpl-{request_digest[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "system_fingerprint": "fp_hookstream_sim",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


# --- Anthropic Messages ----------------------------------------------------------------------


def _anthropic_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            block["text"]
            for block in content
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        )
    raise SimError(400, f"{where} must be a string or a list of blocks", code="invalid_content")


def _tool_schema(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The input_schema of the tool the request forces (tool_choice type tool), if any."""
    choice = data.get("tool_choice")
    tools = data.get("tools")
    if not isinstance(choice, dict) or choice.get("type") != "tool" or not isinstance(tools, list):
        return None
    for tool in tools:
        if isinstance(tool, dict) and tool.get("name") == choice.get("name"):
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                raise SimError(400, "tools[].input_schema must be an object", code="invalid_tools")
            return schema
    raise SimError(400, "tool_choice names no tool in 'tools'", code="invalid_tools")


def parse_messages_request(data: Any) -> ChatRequest:
    """Validate an Anthropic Messages request body (model, max_tokens, messages, tools)."""
    if not isinstance(data, dict):
        raise SimError(400, "request body must be a JSON object", code="invalid_body")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise SimError(400, "model: Field required", code="missing_model")
    if not isinstance(data.get("max_tokens"), int):
        raise SimError(400, "max_tokens: Field required", code="missing_max_tokens")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SimError(400, "messages: must be a non-empty list", code="invalid_messages")
    texts: list[tuple[str, str]] = []
    if data.get("system") is not None:
        texts.append(("system", _anthropic_text(data["system"], "system")))
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise SimError(
                400, f"messages.{i}.role: must be 'user' or 'assistant'", code="invalid_messages"
            )
        texts.append((role, _anthropic_text(message.get("content"), f"messages.{i}.content")))
    return ChatRequest(model, tuple(texts), _tool_schema(data), data["max_tokens"])


def messages_body(
    request: ChatRequest, output: Any, text: str | None, tool_name: str, request_digest: str
) -> dict[str, Any]:
    """A Messages API answer: a tool_use block with ``output``, or a text block with ``text``."""
    block: dict[str, Any]
    if text is None:
        block = {
            "type": "tool_use",
            "id": f"toolu_{request_digest[:24]}",
            "name": tool_name,
            "input": output,
        }
        answered = str(output)
    else:
        block = {"type": "text", "text": text}
        answered = text
    return {
        "id": f"msg_{request_digest[:24]}",
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": [block],
        "stop_reason": "tool_use" if text is None else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": request.prompt_tokens,
            "output_tokens": count_tokens(answered),
        },
    }
