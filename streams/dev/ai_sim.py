"""An OpenAI-compatible chat-completions simulator for the demo, the tests and the benchmarks.

A real provider is slow, costs money and answers differently each time; a pipeline test needs the
opposite. This server answers ``POST /v1/chat/completions`` from a small keyword analysis of the
last ``user`` message (sentiment, category, summary, score), shaped by the request's JSON schema, so
a given input always yields the same output. Faults (429 with Retry-After, 500, malformed JSON) and
latency are injected from a seeded RNG and can be changed at runtime through ``/_sim/config``.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /healthz``, ``GET /_sim/stats``,
``GET|POST /_sim/config``, ``POST /_sim/reset``.

Run: ``hookstream dev ai-sim --port 8091`` or ``python -m streams.dev.ai_sim``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import re
import sys
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from streams.dev._simcommon import (
    Handler,
    SimError,
    add_server_args,
    api_key_from_env,
    apply_settings,
    bearer_middleware,
    error_middleware,
    json_response,
    patched_settings,
    read_json,
    run,
    utc_now_iso,
)

SIM_MODEL = "sim-1"
SUMMARY_MAX_CHARS = 120
CALLS_KEPT = 10_000
COMPLETIONS_PATH = "/v1/chat/completions"

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

    @property
    def user_text(self) -> str:
        """The last user message: the sim analyses only it (instructions live in ``system``)."""
        return next((text for role, text in reversed(self.texts) if role == "user"), "")


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
    return ChatRequest(model, tuple(texts), _response_schema(data.get("response_format")))


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
    prompt_tokens = count_tokens("".join(text for _, text in request.texts))
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


# --- server --------------------------------------------------------------------------------


class AISimSettings(BaseModel):
    """Server settings and fault knobs; the knobs are mutable at runtime via ``/_sim/config``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8091, ge=0, le=65535)
    api_key: SecretStr | None = None
    latency_ms: float = Field(default=0.0, ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)
    rate_429: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: int = Field(default=1, ge=0)
    rate_500: float = Field(default=0.0, ge=0, le=1)
    rate_malformed: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _rates_fit_one_draw(self) -> Self:
        # One uniform draw per request picks the fault, so the rates share the unit interval.
        if self.rate_429 + self.rate_500 + self.rate_malformed > 1:
            raise ValueError("rate_429 + rate_500 + rate_malformed must not exceed 1")
        return self


RUNTIME_KNOBS = frozenset(
    {"latency_ms", "jitter_ms", "rate_429", "retry_after_s", "rate_500", "rate_malformed", "seed"}
)
Fault = Literal["429", "500", "malformed"] | None


class _SimState:
    """Counters and the fault RNG of one running simulator."""

    def __init__(self, settings: AISimSettings) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        self.rng = random.Random(self.settings.seed)  # noqa: S311 - fault injection, not crypto
        self.seq = 0
        self.requests = 0
        self.malformed = 0
        self.by_status: Counter[str] = Counter()
        self.calls: deque[dict[str, Any]] = deque(maxlen=CALLS_KEPT)
        self.in_flight = getattr(self, "in_flight", 0)
        self.max_in_flight = self.in_flight

    def draw(self) -> tuple[Fault, float]:
        """The fault and the delay of the next request; always two draws, whatever the knobs."""
        s = self.settings
        u = self.rng.random()
        jitter_ms = self.rng.uniform(-s.jitter_ms, s.jitter_ms)
        fault: Fault = None
        if u < s.rate_429:
            fault = "429"
        elif u < s.rate_429 + s.rate_500:
            fault = "500"
        elif u < s.rate_429 + s.rate_500 + s.rate_malformed:
            fault = "malformed"
        return fault, max(0.0, s.latency_ms + jitter_ms) / 1000

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "malformed": self.malformed,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "calls": sorted(self.calls, key=lambda call: call["seq"]),
        }


STATE = web.AppKey("ai_sim_state", _SimState)
CALL = web.RequestKey("ai_sim_call", dict)


@web.middleware
async def _stats_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every completion request with its final status, whatever answered it."""
    if request.path != COMPLETIONS_PATH:
        return await handler(request)
    state = request.app[STATE]
    state.seq += 1
    state.requests += 1
    state.in_flight += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    call: dict[str, Any] = {
        "seq": state.seq,
        "model": None,
        "user_text_sha256": None,
        "status": 500,
        "received_at": utc_now_iso(),
    }
    request[CALL] = call
    try:
        response = await handler(request)
        call["status"] = response.status
        return response
    except web.HTTPException as exc:
        call["status"] = exc.status
        raise
    finally:
        state.in_flight -= 1
        state.by_status[str(call["status"])] += 1
        state.calls.append(call)


async def _completions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    chat = parse_chat_request(await read_json(request))
    user_text = chat.user_text
    call = request[CALL]
    call["model"] = chat.model
    call["user_text_sha256"] = hashlib.sha256(user_text.encode()).hexdigest()
    fault, delay_s = state.draw()
    if delay_s > 0:
        await asyncio.sleep(delay_s)
    retry_after_s = state.settings.retry_after_s
    if fault == "429":
        raise SimError(
            429,
            "Rate limit reached for requests (simulated).",
            type_="requests",
            code="rate_limit_exceeded",
            headers={
                "Retry-After": str(retry_after_s),
                "retry-after-ms": str(retry_after_s * 1000),
                "x-ratelimit-reset-requests": f"{retry_after_s}s",
            },
        )
    if fault == "500":
        raise SimError(
            500,
            "The server had an error processing your request (simulated).",
            type_="server_error",
        )
    analysis = analyse(user_text)
    if fault == "malformed":
        state.malformed += 1
        # What a chatty model without JSON mode does: prose, then a truncated pseudo-object.
        content = (
            "Sure! Here is the analysis: "
            f"{{sentiment: {analysis.sentiment}, summary: {analysis.summary}"
        )
    else:
        content = orjson.dumps(build_output(chat.schema, analysis)).decode()
    digest = hashlib.sha256(
        orjson.dumps([chat.model, chat.texts, chat.schema], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    return json_response(completion_body(chat, content, digest))


async def _models(_request: web.Request) -> web.Response:
    model = {"id": SIM_MODEL, "object": "model", "created": 0, "owned_by": "hookstream-sim"}
    return json_response({"object": "list", "data": [model]})


async def _healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _get_stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].stats())


def _knobs(settings: AISimSettings) -> dict[str, Any]:
    return settings.model_dump(include=set(RUNTIME_KNOBS))


async def _get_config(request: web.Request) -> web.Response:
    return json_response(_knobs(request.app[STATE].settings))


async def _post_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    patch = await read_json(request)
    new = patched_settings(state.settings, patch, RUNTIME_KNOBS)
    apply_settings(state.settings, new, frozenset(patch))
    if "seed" in patch:
        state.rng = random.Random(new.seed)  # noqa: S311 - fault injection, not crypto
    return json_response(_knobs(state.settings))


async def _reset(request: web.Request) -> web.Response:
    """Clear the stats and restart the fault sequence from the seed."""
    state = request.app[STATE]
    state.reset()
    return json_response(state.stats())


def create_app(settings: AISimSettings) -> web.Application:
    """The simulator app; ``settings`` is kept (not copied) and changed by ``/_sim/config``."""
    app = web.Application(
        middlewares=[
            _stats_middleware,
            error_middleware,
            bearer_middleware(settings.api_key, ("/v1/",)),
        ]
    )
    app[STATE] = _SimState(settings)
    app.router.add_post(COMPLETIONS_PATH, _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_sim/stats", _get_stats)
    app.router.add_get("/_sim/config", _get_config)
    app.router.add_post("/_sim/config", _post_config)
    app.router.add_post("/_sim/reset", _reset)
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookstream dev ai-sim",
        description="Deterministic OpenAI-compatible chat completions simulator.",
    )
    add_server_args(parser, default_port=8091)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform ± added to the delay")
    parser.add_argument("--rate-429", type=float, default=0.0, help="share answered 429")
    parser.add_argument("--retry-after-s", type=int, default=1, help="Retry-After sent with 429")
    parser.add_argument("--rate-500", type=float, default=0.0, help="share answered 500")
    parser.add_argument(
        "--rate-malformed", type=float, default=0.0, help="share answered 200 with non-JSON content"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault/jitter RNG")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``hookstream dev ai-sim``: serve until SIGTERM/SIGINT; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = AISimSettings(
            host=args.host,
            port=args.port,
            api_key=api_key_from_env(parser, args.api_key_env),
            latency_ms=args.latency_ms,
            jitter_ms=args.jitter_ms,
            rate_429=args.rate_429,
            retry_after_s=args.retry_after_s,
            rate_500=args.rate_500,
            rate_malformed=args.rate_malformed,
            seed=args.seed,
        )
    except ValidationError as exc:
        parser.error(str(exc))
    return run(create_app(settings), host=settings.host, port=settings.port, name="ai-sim")


if __name__ == "__main__":
    sys.exit(main())
