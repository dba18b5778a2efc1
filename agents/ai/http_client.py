"""What every HTTP chat-model client shares: one POST, timed, its answer and usage read out.

A provider client says only how its API differs — URL path, auth headers, request body, where
the answer text and the token counts sit in the response (:meth:`answer_text`,
:meth:`token_usage`). A 200 whose body lacks them is the server's fault, so it is retriable.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from agents.ai.provider import STAGE, ChatRequest, Completion
from agents.outbound.http import request_json
from schemas.config_ai import ProviderConfig
from schemas.errors import RetriableRemoteError
from schemas.events import TokenUsage


class HttpChatClient:
    path = ""  # appended to the provider's base URL
    response_kind = "response"  # named in the error for a malformed body

    def __init__(self, provider: ProviderConfig, session: aiohttp.ClientSession) -> None:
        self.provider = provider
        self.session = session
        self.url = provider.base_url.rstrip("/") + self.path

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        raise NotImplementedError

    def answer_text(self, body: Any) -> str:
        """The answer's text; raise KeyError/IndexError/TypeError when the body has none."""
        raise NotImplementedError

    def token_usage(self, body: Any) -> tuple[int, int]:
        """(prompt tokens, completion tokens) as the provider reports them."""
        raise NotImplementedError

    async def complete(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        _, body = await request_json(
            self.session,
            "POST",
            self.url,
            stage=STAGE,
            what=f"provider {self.provider.name}",
            timeout_s=self.provider.timeout_s,
            headers=self._headers(),
            json_body=self.payload(request),
        )
        return self.completion(body, request, (time.perf_counter() - started) * 1000)

    def completion(self, body: Any, request: ChatRequest, latency_ms: float) -> Completion:
        """The answer and its usage read out of a response body; a body without them is the
        server's fault (retriable)."""
        try:
            content = self.answer_text(body)
            prompt_tokens, completion_tokens = self.token_usage(body)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RetriableRemoteError(
                f"provider {self.provider.name}: malformed {self.response_kind} ({exc})",
                stage=STAGE,
            ) from None
        return Completion(
            content=content,
            model=str(body.get("model") or request.model),
            usage=TokenUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
            latency_ms=latency_ms,
        )
