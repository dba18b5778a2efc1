"""A Slack incoming-webhook simulator: the Slack sink's target in the demo and the tests.

Slack's incoming webhooks accept ``POST`` of ``{"text": …}`` (plus optional ``username``,
``icon_emoji``, ``blocks``) on a secret URL and answer ``200`` with the body ``ok``. Errors are
plain text too: ``400 invalid_payload`` / ``no_text``, ``404 no_service``, ``410
channel_is_archived``, ``429`` with Retry-After when rate limited. This server does the same on
``POST /slack/{channel}`` and records every message it accepted, with its Idempotency-Key,
at ``GET /_sim/messages?after=SEQ`` so tests can check what was posted, and how often.

Knobs (``POST /_sim/config``): ``fail_status`` (every post answers it, 429/503 with
Retry-After), ``latency_ms``. Routes: ``POST /slack/{channel}``, ``GET /healthz``,
``GET /_sim/messages``, ``GET /_sim/stats``, ``GET|POST /_sim/config``, ``POST /_sim/reset``.

Run: ``hookstream dev slack-sim --port 8093`` or ``python -m streams.dev.slack_sim``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from streams.dev._simcommon import (
    add_config_routes,
    add_server_args,
    json_response,
    serve_from_args,
    utc_now_iso,
)

_ERRORS = {400: "invalid_payload", 403: "invalid_token", 404: "no_service"}
_ERRORS.update({410: "channel_is_archived", 429: "rate_limited", 500: "rollup_error"})


class SlackSimSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8093, ge=0, le=65535)
    fail_status: int | None = Field(default=None, ge=400, le=599)
    latency_ms: float = Field(default=0.0, ge=0)
    retry_after_s: int = Field(default=1, ge=0)


RUNTIME_KNOBS = frozenset({"fail_status", "latency_ms", "retry_after_s"})


class _SlackState:
    def __init__(self, settings: SlackSimSettings) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.by_status: Counter[str] = Counter()
        self.requests = 0


STATE = web.AppKey("slack_sim_state", _SlackState)


def _text(status: int, body: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=body, headers=headers, content_type="text/plain")


async def _post(request: web.Request) -> web.Response:
    state = request.app[STATE]
    settings = state.settings
    state.requests += 1
    if settings.latency_ms > 0:
        await asyncio.sleep(settings.latency_ms / 1000)
    if settings.fail_status is not None:
        status = settings.fail_status
        state.by_status[str(status)] += 1
        retry = {"Retry-After": str(settings.retry_after_s)} if status in (429, 503) else {}
        return _text(status, _ERRORS.get(status, "server_error"), retry)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        state.by_status["400"] += 1
        return _text(400, "invalid_payload")
    if not isinstance(body.get("text"), str) or not body["text"]:
        state.by_status["400"] += 1
        return _text(400, "no_text")
    state.messages.append(
        {
            "seq": len(state.messages) + 1,
            "channel": request.match_info["channel"],
            "text": body["text"],
            "username": body.get("username"),
            "icon_emoji": body.get("icon_emoji"),
            "idempotency_key": request.headers.get("Idempotency-Key"),
            "received_at": utc_now_iso(),
        }
    )
    state.by_status["200"] += 1
    return _text(200, "ok")


async def _messages(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        after = max(0, int(request.query.get("after", "0")))
    except ValueError:
        return json_response({"error": "after must be an integer"}, status=400)
    return json_response({"messages": state.messages[after:], "last_seq": len(state.messages)})


async def _stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(
        {
            "requests": state.requests,
            "by_status": dict(state.by_status),
            "messages": len(state.messages),
        }
    )


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return await _stats(request)


async def _healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def create_app(settings: SlackSimSettings) -> web.Application:
    app = web.Application()
    app[STATE] = _SlackState(settings)
    app.router.add_post("/slack/{channel}", _post)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_sim/messages", _messages)
    app.router.add_get("/_sim/stats", _stats)
    add_config_routes(app, STATE, RUNTIME_KNOBS)
    app.router.add_post("/_sim/reset", _reset)
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookstream dev slack-sim",
        description="Slack incoming-webhook simulator that records every message it accepts.",
    )
    add_server_args(parser, default_port=8093)
    parser.add_argument("--fail-status", type=int, default=None, help="answer every post with it")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay per post")
    parser.add_argument("--retry-after-s", type=int, default=1, help="Retry-After with 429/503")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``hookstream dev slack-sim``: serve until SIGTERM/SIGINT; returns the exit status."""
    return serve_from_args(build_parser(), argv, SlackSimSettings, create_app, name="slack-sim")


if __name__ == "__main__":
    sys.exit(main())
