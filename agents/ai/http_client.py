"""What every HTTP chat-model client shares: one POST, timed, its answer and usage read out.

A provider client says only how its API differs — URL path, auth headers, request body, where
the answer text and the token counts sit in the response (:meth:`answer_text`,
:meth:`token_usage`). A 200 whose body lacks them is the server's fault, so it is retriable.

The POST goes through :class:`agents.outbound.wire.JsonPoster` (its own kept-alive connections,
the request line and headers encoded once per client), not through the aiohttp session: that
cost twice the CPU per call (issue 16). The session still gives its connect timeout
(``worker.http_connect_timeout_s``), and a client made for a new session starts a new pool.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson

from agents.ai.provider import STAGE, ChatRequest, Completion
from agents.outbound.http import DEFAULT_CONNECT_TIMEOUT_S
from agents.outbound.wire import JsonPoster
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
        self._poster: JsonPoster | None = None

    @property
    def poster(self) -> JsonPoster:
        """The client's connections to its URL, opened by its first call."""
        if self._poster is None:
            timeout = getattr(self.session, "timeout", None)
            connect_s = getattr(timeout, "sock_connect", None) or DEFAULT_CONNECT_TIMEOUT_S
            self._poster = JsonPoster(
                self.url,
                self._headers(),
                what=f"provider {self.provider.name}",
                stage=STAGE,
                connect_timeout_s=connect_s,
            )
        return self._poster

    def close(self) -> None:
        """Close its idle connections (a client replaced, for a new session)."""
        if self._poster is not None:
            self._poster.close()

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
        body = orjson.dumps(self.payload(request))
        _, answer = await self.poster.post(body, timeout_s=self.provider.timeout_s)
        return self.completion(answer, request, (time.perf_counter() - started) * 1000)

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
