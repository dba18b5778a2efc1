"""OpenAI's Responses API in the AI simulator, background mode included.

Shapes follow OpenAI's published reference (``POST /v1/responses``, ``GET /v1/responses/{id}``,
``POST /v1/responses/{id}/cancel``): a request has ``model``, ``input`` (a string or a list of
messages), ``instructions``, ``text.format`` (``text``, ``json_object`` or a flat
``json_schema`` with ``name`` and ``schema``), ``max_output_tokens``, ``temperature``,
``store`` and ``background``. A response object has an ``id`` (``resp_…``), a ``status``
(``queued``, ``in_progress``, ``completed``, ``failed``, ``cancelled``, ``incomplete``), an
``output`` list whose ``message`` item holds ``output_text`` parts, ``usage`` with
``input_tokens``/``output_tokens``, and ``error`` when it failed.

Without ``background`` the answer comes in the POST's own reply after the simulated latency,
with the chat endpoint's faults (429, 500 as HTTP errors; malformed text). With
``background: true`` the POST answers at once with status ``queued``; the response turns
``in_progress`` and is done once the drawn latency has passed: a drawn 500 then reads as
status ``failed`` with ``error.code`` ``server_error`` (as OpenAI reports a background failure),
a drawn 429 or a down model is the POST's own HTTP error, since nothing was created. While
``hold`` is set (``POST /_sim/responses/config``) background responses stay ``in_progress``,
so a test can kill a worker that is waiting for them. A response is found for ``ttl_s``
after its creation (OpenAI keeps background responses for polling about ten minutes), then
``GET`` answers 404 as for an id never seen.

Every created response is paid: ``/_sim/stats`` reports ``responses.paid`` (one per response
created, background or not), and the call log has the POST with status 200, as for a chat call,
and the ``response_id`` it created.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web

from streams.dev._simcommon import SimError, json_response, read_json
from streams.dev.ai_sim_logic import (
    Analysis,
    ChatRequest,
    analyse,
    build_output,
    count_tokens,
)

RESPONSES_PATH = "/v1/responses"
DEFAULT_TTL_S = 600.0
FINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})


class _Begin(Protocol):
    def __call__(self, request: web.Request, chat: ChatRequest, api: str) -> tuple[Any, float]: ...


@dataclass(frozen=True, slots=True)
class SimHooks:
    """What the Responses routes borrow from :mod:`streams.dev.ai_sim` (passed in, so this
    module does not import it back): record + draw + admit, the drawn fault's outcome, and the
    answer with its rate-limit settlement."""

    begin: _Begin
    outcome: Callable[[Any, ChatRequest, Any], Analysis | None]
    answered: Callable[[web.Request, dict[str, Any], str], web.Response]
    state: web.AppKey[Any]
    call: web.RequestKey[dict[str, Any]]  # the call log's record of this request


@dataclass
class _Stored:
    body: dict[str, Any]
    chat: ChatRequest
    fault: Any
    ready_at_s: float
    expires_at_s: float


@dataclass
class ResponsesState:
    ttl_s: float = DEFAULT_TTL_S
    hold: bool = False
    stored: OrderedDict[str, _Stored] = field(default_factory=OrderedDict)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def stats(self) -> dict[str, Any]:
        self.expire(time.monotonic())
        names = ("paid", "background", "retrieved", "not_found", "cancelled")
        return {
            **{name: self.counts.get(name, 0) for name in names},
            "by_status": {
                status: sum(1 for s in self.stored.values() if s.body["status"] == status)
                for status in ("queued", "in_progress", *sorted(FINAL))
            },
            "hold": self.hold,
            "ttl_s": self.ttl_s,
        }

    def expire(self, now_s: float) -> None:
        """Forget responses past their TTL (kept in creation order: the oldest go first)."""
        while self.stored:
            oldest = next(iter(self.stored.values()))
            if oldest.expires_at_s > now_s:
                return
            self.stored.popitem(last=False)


RESPONSES = web.AppKey("ai_sim_responses", ResponsesState)
_HOOKS = web.AppKey("ai_sim_responses_hooks", SimHooks)


# --- request parsing -----------------------------------------------------------------------


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
                raise SimError(
                    400,
                    f"{where}[{i}].type must be 'input_text' or 'output_text'",
                    code="invalid_value",
                )
            if not isinstance(part.get("text"), str):
                raise SimError(400, f"{where}[{i}].text must be a string", code="invalid_value")
            parts.append(part["text"])
        return "\n".join(parts)
    raise SimError(400, f"{where} must be a string or a list of parts", code="invalid_value")


def _format_schema(text: Any) -> Mapping[str, Any] | None:
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind in ("text", "json_object"):
        return None
    if kind != "json_schema":
        raise SimError(
            400,
            "text.format.type must be one of 'text', 'json_object', 'json_schema'",
            code="invalid_value",
        )
    assert isinstance(fmt, dict)  # noqa: S101 - kind came from it
    if not isinstance(fmt.get("name"), str):
        raise SimError(400, "text.format.name is required", code="missing_required_parameter")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise SimError(400, "text.format.schema must be an object", code="invalid_value")
    return schema


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    chat: ChatRequest
    background: bool
    data: dict[str, Any]


def parse_responses_request(data: Any) -> ResponsesRequest:
    """Validate a ``POST /v1/responses`` body; :class:`SimError` 400 names the field at fault."""
    if not isinstance(data, dict):
        raise SimError(400, "request body must be a JSON object", code="invalid_body")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise SimError(
            400, "Missing required parameter: 'model'.", code="missing_required_parameter"
        )
    raw_input = data.get("input")
    texts: list[tuple[str, str]] = []
    instructions = data.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise SimError(400, "'instructions' must be a string", code="invalid_type")
        texts.append(("system", instructions))
    if isinstance(raw_input, str):
        texts.append(("user", raw_input))
    elif isinstance(raw_input, list) and raw_input:
        for i, item in enumerate(raw_input):
            role = item.get("role") if isinstance(item, dict) else None
            if role not in ("user", "assistant", "system", "developer"):
                raise SimError(
                    400,
                    f"input[{i}].role must be one of 'user', 'assistant', 'system', 'developer'",
                    code="invalid_value",
                )
            assert isinstance(item, dict)  # noqa: S101 - role came from it
            texts.append((role, _text_of(item.get("content"), f"input[{i}].content")))
    else:
        raise SimError(
            400, "'input' must be a string or a non-empty list", code="missing_required_parameter"
        )
    background = data.get("background", False)
    if not isinstance(background, bool):
        raise SimError(400, "'background' must be a boolean", code="invalid_type")
    if background and data.get("store") is False:
        raise SimError(400, "Background mode requires 'store' to be true.", code="invalid_value")
    max_tokens = data.get("max_output_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 16
    ):
        raise SimError(
            400, "'max_output_tokens' must be an integer of at least 16", code="invalid_value"
        )
    chat = ChatRequest(model, tuple(texts), _format_schema(data.get("text")), max_tokens or 0)
    return ResponsesRequest(chat, background, data)


# --- response objects ----------------------------------------------------------------------


def response_body(request: ResponsesRequest, response_id: str, status: str) -> dict[str, Any]:
    """A ``response`` object without output yet (``queued``/``in_progress``)."""
    data = request.data
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": request.background,
        "error": None,
        "incomplete_details": None,
        "instructions": data.get("instructions"),
        "max_output_tokens": data.get("max_output_tokens"),
        "model": request.chat.model,
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": data.get("store", True),
        "temperature": data.get("temperature", 1.0),
        "text": data.get("text") or {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "metadata": data.get("metadata") or {},
    }


def _usage(chat: ChatRequest, text: str) -> dict[str, Any]:
    input_tokens, output_tokens = chat.prompt_tokens, count_tokens(text)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def complete_body(body: dict[str, Any], chat: ChatRequest, analysis: Analysis | None) -> None:
    """Turn ``body`` into a completed response: the answer as one ``output_text``."""
    if analysis is None:  # what a chatty model without structured output does
        seen = analyse(chat.user_text)
        text = f"Sure! Here is the analysis: {{sentiment: {seen.sentiment}, summary: {seen.summary}"
    else:
        text = orjson.dumps(build_output(chat.schema, analysis)).decode()
    body["status"] = "completed"
    body["output"] = [
        {
            "type": "message",
            "id": f"msg_{uuid.uuid4().hex}",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
    ]
    body["usage"] = _usage(chat, text)


def fail_body(body: dict[str, Any]) -> None:
    body["status"] = "failed"
    body["error"] = {
        "code": "server_error",
        "message": "The server had an error processing your request (simulated).",
    }


# --- routes --------------------------------------------------------------------------------


async def _create(request: web.Request) -> web.Response:
    hooks = request.app[_HOOKS]
    responses = request.app[RESPONSES]
    parsed = parse_responses_request(await read_json(request))
    chat = parsed.chat
    response_id = f"resp_{uuid.uuid4().hex}"
    request[hooks.call]["response_id"] = response_id
    if not parsed.background:
        analysis = await _answer(request, hooks, chat)
        body = response_body(parsed, response_id, "in_progress")
        complete_body(body, chat, analysis)
        responses.count("paid")
        now_s = time.monotonic()
        responses.expire(now_s)
        responses.stored[response_id] = _Stored(body, chat, None, now_s, now_s + responses.ttl_s)
        return hooks.answered(request, body, "responses")
    fault, delay_s = hooks.begin(request, chat, "openai")
    if fault == "429" or chat.model in request.app[hooks.state].settings.down_models:
        hooks.outcome(request.app[hooks.state], chat, fault)  # raises: nothing is created
    body = response_body(parsed, response_id, "queued")
    now_s = time.monotonic()
    responses.expire(now_s)
    responses.stored[response_id] = _Stored(
        body, chat, fault, now_s + delay_s, now_s + responses.ttl_s
    )
    responses.count("paid")
    responses.count("background")
    # Its rate-limit entry is settled with the usage it will report (known now: the
    # analysis is a pure function of the input).
    final = dict(body)
    complete_body(final, chat, analyse(chat.user_text))
    return hooks.answered(request, {**body, "usage": final["usage"]}, "responses")


async def _answer(request: web.Request, hooks: SimHooks, chat: ChatRequest) -> Analysis | None:
    fault, delay_s = hooks.begin(request, chat, "openai")
    if delay_s > 0:
        await asyncio.sleep(delay_s)
    return hooks.outcome(request.app[hooks.state], chat, fault)


def _found(request: web.Request) -> _Stored:
    responses = request.app[RESPONSES]
    response_id = request.match_info["response_id"]
    responses.expire(time.monotonic())
    stored = responses.stored.get(response_id)
    if stored is None:
        responses.count("not_found")
        raise SimError(404, f"Response with id '{response_id}' not found.", code=None)
    return stored


def _advance(request: web.Request, stored: _Stored) -> None:
    """Move a background response on by the clock: queued → in_progress → its final status."""
    body = stored.body
    if body["status"] in FINAL:
        return
    body["status"] = "in_progress"
    if request.app[RESPONSES].hold or time.monotonic() < stored.ready_at_s:
        return
    if stored.fault == "500":
        fail_body(body)
        return
    malformed = stored.fault == "malformed"
    complete_body(body, stored.chat, None if malformed else analyse(stored.chat.user_text))


async def _retrieve(request: web.Request) -> web.Response:
    stored = _found(request)
    request.app[RESPONSES].count("retrieved")
    _advance(request, stored)
    return json_response(stored.body)


async def _cancel(request: web.Request) -> web.Response:
    stored = _found(request)
    body = stored.body
    if not body["background"]:
        raise SimError(
            400, "Only responses created with background=true can be cancelled.", code=None
        )
    _advance(request, stored)
    if body["status"] not in ("cancelled", "queued", "in_progress"):
        raise SimError(400, f"Cannot cancel a response with status {body['status']}.", code=None)
    if body["status"] != "cancelled":
        body["status"] = "cancelled"
        request.app[RESPONSES].count("cancelled")
    return json_response(body)


async def _configure(request: web.Request) -> web.Response:
    """``{"hold": bool, "ttl_s": float}``: hold background responses in_progress; their TTL."""
    responses = request.app[RESPONSES]
    data = await read_json(request)
    if not isinstance(data, dict) or set(data) - {"hold", "ttl_s"}:
        raise SimError(400, "body: an object with 'hold' and/or 'ttl_s'", code="invalid_body")
    if "hold" in data:
        if not isinstance(data["hold"], bool):
            raise SimError(400, "hold must be a boolean", code="invalid_value")
        responses.hold = data["hold"]
    if "ttl_s" in data:
        ttl_s = data["ttl_s"]
        if not isinstance(ttl_s, int | float) or isinstance(ttl_s, bool) or ttl_s <= 0:
            raise SimError(400, "ttl_s must be a positive number", code="invalid_value")
        responses.ttl_s = float(ttl_s)
    return json_response(responses.stats())


def add_responses_routes(app: web.Application, hooks: SimHooks) -> None:
    app[RESPONSES] = ResponsesState()
    app[_HOOKS] = hooks
    app.router.add_post(RESPONSES_PATH, _create)
    app.router.add_get(RESPONSES_PATH + "/{response_id}", _retrieve)
    app.router.add_post(RESPONSES_PATH + "/{response_id}/cancel", _cancel)
    app.router.add_post("/_sim/responses/config", _configure)


def responses_stats(app: web.Application) -> dict[str, Any]:
    return {"responses": app[RESPONSES].stats()}


def reset_responses(app: web.Application) -> None:
    """Clear the counters and the stored responses; hold and TTL stay as configured."""
    responses = app[RESPONSES]
    responses.stored.clear()
    responses.counts.clear()
