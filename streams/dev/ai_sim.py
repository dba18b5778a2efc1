"""An OpenAI- and Anthropic-compatible simulator for the demo, the tests and the benchmarks.

A real provider is slow, costs money and answers differently each time; a pipeline test needs the
opposite. This server answers ``POST /v1/chat/completions`` from a small keyword analysis of the
last ``user`` message (sentiment, category, summary, score), shaped by the request's JSON schema, so
a given input always yields the same output. Faults (429 with Retry-After, 500, malformed JSON) and
latency are injected from a seeded RNG and can be changed at runtime through ``/_sim/config``.

With ``tokens_per_minute`` / ``requests_per_minute`` set it enforces a provider's rate limits
(a sliding minute, 429 with Retry-After and the x-ratelimit-* / anthropic-ratelimit-* headers,
which successful answers carry too): :mod:`streams.dev.ai_sim_limits`.

The same analysis answers Anthropic's ``POST /v1/messages`` (a forced tool call's
``input_schema`` shapes the answer); the pure logic lives in :mod:`streams.dev.ai_sim_logic`.

Routes: ``POST /v1/chat/completions``, ``POST /v1/messages``, ``GET /v1/models``,
``GET /healthz``, ``GET /_sim/stats``, ``GET|POST /_sim/config``, ``POST /_sim/reset``; the
batch APIs (OpenAI Files + Batch, Anthropic Message Batches): :mod:`streams.dev.ai_sim_batch`;
the Responses API, background mode included: :mod:`streams.dev.ai_sim_responses`.

Run: ``hookstream dev ai-sim --port 8091`` or ``python -m streams.dev.ai_sim``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from streams.dev import ai_sim_batch
from streams.dev._simcommon import (
    Handler,
    SimError,
    add_config_routes,
    add_server_args,
    bearer_middleware,
    error_middleware,
    json_response,
    read_json,
    serve_from_args,
    utc_now_iso,
)
from streams.dev.ai_sim_limits import SlidingWindow, Verdict, limit_headers
from streams.dev.ai_sim_logic import (
    SIM_MODEL,
    SUMMARY_MAX_CHARS,
    Analysis,
    ChatRequest,
    analyse,
    build_output,
    completion_body,
    count_tokens,
    messages_body,
    parse_chat_request,
    parse_messages_request,
    summarise,
)
from streams.dev.ai_sim_responses import (
    RESPONSES_PATH,
    SimHooks,
    add_responses_routes,
    reset_responses,
    responses_stats,
)

# Re-exported: the unit tests and the e2e test import the logic from here too.
__all__ = [
    "SUMMARY_MAX_CHARS",
    "AISimSettings",
    "Analysis",
    "analyse",
    "build_output",
    "completion_body",
    "count_tokens",
    "create_app",
    "main",
    "parse_chat_request",
    "summarise",
]

CALLS_KEPT = 10_000
COMPLETIONS_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
MODEL_PATHS = frozenset({COMPLETIONS_PATH, MESSAGES_PATH, RESPONSES_PATH})

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
    down_models: list[str] = Field(default_factory=list)  # these models answer 503
    # A provider's limits over a sliding minute (None: none): prompt + max_tokens counted at
    # admission, settled to the tokens used once answered (streams.dev.ai_sim_limits).
    tokens_per_minute: int | None = Field(default=None, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _rates_fit_one_draw(self) -> Self:
        # One uniform draw per request picks the fault, so the rates share the unit interval.
        if self.rate_429 + self.rate_500 + self.rate_malformed > 1:
            raise ValueError("rate_429 + rate_500 + rate_malformed must not exceed 1")
        return self


RUNTIME_KNOBS = frozenset(
    {
        "latency_ms",
        "jitter_ms",
        "rate_429",
        "retry_after_s",
        "rate_500",
        "rate_malformed",
        "seed",
        "down_models",
        "tokens_per_minute",
        "requests_per_minute",
    }
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
        self.limits = getattr(self, "limits", None) or SlidingWindow(time.monotonic)
        self.limits.reset()

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
            "rate_limit": {
                "limited": self.limits.limited,
                "requests_counted": self.limits.requests_counted,
                "tokens_counted": self.limits.tokens_counted,
            },
            "calls": sorted(self.calls, key=lambda call: call["seq"]),
        }


STATE = web.AppKey("ai_sim_state", _SimState)
CALL = web.RequestKey("ai_sim_call", dict)
ADMISSION = web.RequestKey("ai_sim_admission", Verdict)


@web.middleware
async def _stats_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every completion request with its final status, whatever answered it."""
    if request.path not in MODEL_PATHS:
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
        verdict = request.get(ADMISSION)
        if verdict is not None and verdict.entry is not None:
            state.limits.settle(verdict.entry, 0)  # failed: no tokens used (a no-op if settled)
        state.in_flight -= 1
        state.by_status[str(call["status"])] += 1
        state.calls.append(call)


async def _answer(request: web.Request, chat: ChatRequest, api: str) -> Analysis | None:
    """Record the call, wait the simulated latency, raise the drawn fault; the analysis to
    answer with, or None for a malformed answer."""
    fault, delay_s = _begin(request, chat, api)
    if delay_s > 0:
        await asyncio.sleep(delay_s)
    return _outcome(request.app[STATE], chat, fault)


def _begin(request: web.Request, chat: ChatRequest, api: str) -> tuple[Fault, float]:
    """Record the call, draw its fault and delay, count it against the rate limits (429 now
    when over them). Apart from :func:`_answer` for background responses, which answer at
    once and finish after the delay (:mod:`streams.dev.ai_sim_responses`)."""
    state = request.app[STATE]
    user_text = chat.user_text
    call = request[CALL]
    call["model"] = chat.model
    call["api"] = api
    call["user_text_sha256"] = hashlib.sha256(user_text.encode()).hexdigest()
    # A re-ask carries the earlier answer as an assistant turn, then what was wrong with it:
    # kept, so a test can see what the model was told.
    call["reask"] = any(role == "assistant" for role, _ in chat.texts)
    if call["reask"]:
        call["correction"] = chat.texts[-1][1]
    fault, delay_s = state.draw()
    _admit(request, chat, api)
    return fault, delay_s


def _outcome(state: _SimState, chat: ChatRequest, fault: Fault) -> Analysis | None:
    """Raise the drawn fault (or the model's outage); else the analysis, None if malformed."""
    if chat.model in state.settings.down_models:
        raise SimError(503, f"model {chat.model} is down (simulated).", type_="server_error")
    retry_after_s = state.settings.retry_after_s
    if fault == "429":
        reset_at = datetime.now(UTC) + timedelta(seconds=retry_after_s)
        raise SimError(
            429,
            "Rate limit reached for requests (simulated).",
            type_="requests",
            code="rate_limit_exceeded",
            headers={
                "Retry-After": str(retry_after_s),
                "retry-after-ms": str(retry_after_s * 1000),
                "x-ratelimit-reset-requests": f"{retry_after_s}s",
                "anthropic-ratelimit-requests-reset": reset_at.isoformat(),
            },
        )
    if fault == "500":
        raise SimError(
            500,
            "The server had an error processing your request (simulated).",
            type_="server_error",
        )
    if fault == "malformed":
        state.malformed += 1
        return None
    return analyse(chat.user_text)


def _admit(request: web.Request, chat: ChatRequest, api: str) -> None:
    """Count the request against the rate limits, or answer 429 as the provider would."""
    settings = request.app[STATE].settings
    rpm, tpm = settings.requests_per_minute, settings.tokens_per_minute
    if rpm is None and tpm is None:
        return
    verdict = request.app[STATE].limits.admit(chat.prompt_tokens + chat.max_tokens, rpm, tpm)
    if verdict.entry is None:
        raise SimError(
            429,
            f"Rate limit reached for {verdict.limited_by} per minute (simulated).",
            type_=verdict.limited_by,
            code="rate_limit_exceeded",
            headers=limit_headers(verdict, api),
        )
    request[ADMISSION] = verdict


def _answered(request: web.Request, body: dict[str, Any], api: str) -> web.Response:
    """The answer, with the rate-limit headers; its request now counts its real usage."""
    response = json_response(body)
    verdict = request.get(ADMISSION)
    if verdict is not None and verdict.entry is not None:
        usage = body["usage"]
        used = sum(int(usage.get(name, 0)) for name in _USAGE_FIELDS[api])
        request.app[STATE].limits.settle(verdict.entry, used)
        response.headers.update(limit_headers(verdict, api))
    return response


_USAGE_FIELDS = {
    "openai": ("prompt_tokens", "completion_tokens"),
    "anthropic": ("input_tokens", "output_tokens"),
    "responses": ("input_tokens", "output_tokens"),
}


def _malformed(chat: ChatRequest) -> str:
    """What a chatty model without JSON mode does: prose, then a truncated pseudo-object."""
    analysis = analyse(chat.user_text)
    return (
        f"Sure! Here is the analysis: {{sentiment: {analysis.sentiment}, summary: "
        f"{analysis.summary}"
    )


def _digest(chat: ChatRequest) -> str:
    return hashlib.sha256(
        orjson.dumps([chat.model, chat.texts, chat.schema], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


async def _completions(request: web.Request) -> web.Response:
    chat = parse_chat_request(await read_json(request))
    analysis = await _answer(request, chat, "openai")
    if analysis is None:
        content = _malformed(chat)
    else:
        content = orjson.dumps(build_output(chat.schema, analysis)).decode()
    return _answered(request, completion_body(chat, content, _digest(chat)), "openai")


async def _messages(request: web.Request) -> web.Response:
    data = await read_json(request)
    chat = parse_messages_request(data)
    analysis = await _answer(request, chat, "anthropic")
    tool = data.get("tool_choice", {}).get("name", "") if chat.schema is not None else ""
    if analysis is None:
        body = messages_body(chat, None, _malformed(chat), tool, _digest(chat))
    else:
        output = build_output(chat.schema, analysis)
        text = orjson.dumps(output).decode() if chat.schema is None else None
        body = messages_body(chat, None if text else output, text, tool, _digest(chat))
    return _answered(request, body, "anthropic")


async def _models(_request: web.Request) -> web.Response:
    model = {"id": SIM_MODEL, "object": "model", "created": 0, "owned_by": "hookstream-sim"}
    return json_response({"object": "list", "data": [model]})


async def _healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _get_stats(request: web.Request) -> web.Response:
    return json_response({**request.app[STATE].stats(), **responses_stats(request.app)})


async def _reset(request: web.Request) -> web.Response:
    """Clear the stats and restart the fault sequence from the seed."""
    state = request.app[STATE]
    state.reset()
    reset_responses(request.app)
    return json_response({**state.stats(), **responses_stats(request.app)})


def create_app(settings: AISimSettings) -> web.Application:
    """The simulator app; ``settings`` is kept (not copied) and changed by ``/_sim/config``."""
    app = web.Application(
        # A batch input file is one body: OpenAI takes files up to 200 MB, Anthropic 256 MB.
        client_max_size=ai_sim_batch.MAX_BODY_BYTES,
        middlewares=[
            _stats_middleware,
            error_middleware,
            bearer_middleware(settings.api_key, ("/v1/",)),
        ],
    )
    app[STATE] = _SimState(settings)
    app.router.add_post(COMPLETIONS_PATH, _completions)
    app.router.add_post(MESSAGES_PATH, _messages)
    add_responses_routes(app, SimHooks(_begin, _outcome, _answered, STATE, CALL))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_sim/stats", _get_stats)
    add_config_routes(app, STATE, RUNTIME_KNOBS)
    app.router.add_post("/_sim/reset", _reset)
    ai_sim_batch.install(app)  # the batch APIs: /v1/files, /v1/batches, /v1/messages/batches
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
    parser.add_argument(
        "--tokens-per-minute",
        type=int,
        default=None,
        help="answer 429 past this many tokens (prompt + max_tokens, settled to usage) a minute",
    )
    parser.add_argument(
        "--requests-per-minute", type=int, default=None, help="answer 429 past this many a minute"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``hookstream dev ai-sim``: serve until SIGTERM/SIGINT; returns the exit status."""
    return serve_from_args(build_parser(), argv, AISimSettings, create_app, name="ai-sim")


if __name__ == "__main__":
    sys.exit(main())
