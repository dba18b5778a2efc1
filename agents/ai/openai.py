"""Client for OpenAI-compatible ``/v1/chat/completions`` (OpenAI, vLLM, Ollama, LiteLLM...).

Asks for structured output with ``response_format: json_schema`` so capable servers constrain
the answer; the answer is still validated by :mod:`agents.ai.output`, since not every server
honours the schema.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from agents.http import request_json
from schemas.config import ProviderConfig
from schemas.events import TokenUsage
from streams.errors import RetriableRemoteError

STAGE = "ai"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    system: str
    prompt: str
    schema_name: str
    schema: dict[str, Any]
    temperature: float
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    model: str
    usage: TokenUsage
    latency_ms: float


class OpenAIChat:
    def __init__(self, provider: ProviderConfig, session: aiohttp.ClientSession) -> None:
        self.provider = provider
        self.session = session
        self.url = provider.base_url.rstrip("/") + "/chat/completions"

    def _headers(self) -> dict[str, str]:
        if self.provider.api_key is None:
            return {}
        return {"Authorization": f"Bearer {self.provider.api_key.get_secret_value()}"}

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        return {
            "model": request.model,
            "messages": messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.schema,
                    "strict": False,
                },
            },
        }

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
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            content = body["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError("content is not a string")
        except (KeyError, IndexError, TypeError) as exc:
            # A 200 without a completion is the server's fault; asking again may work.
            raise RetriableRemoteError(
                f"provider {self.provider.name}: malformed completion response ({exc})",
                stage=STAGE,
            ) from None
        usage = body.get("usage") or {}
        return Completion(
            content=content,
            model=str(body.get("model") or request.model),
            usage=TokenUsage(
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                total_tokens=int(usage.get("total_tokens", 0)),
            ),
            latency_ms=latency_ms,
        )
