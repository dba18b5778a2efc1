"""Client for OpenAI-compatible ``/v1/chat/completions`` (OpenAI, vLLM, Ollama, LiteLLM...).

Structured output as the provider's ``structured_output`` says: ``json_schema`` (capable servers
constrain the answer), ``json_object`` (JSON mode) or ``instruction`` (the schema in the system
prompt). The answer is validated by :mod:`agents.ai.output` either way, since not every server
honours the schema.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from agents.ai.provider import STAGE, ChatRequest, Completion, schema_instruction
from agents.http import request_json
from schemas.config import ProviderConfig
from schemas.events import TokenUsage
from streams.errors import RetriableRemoteError


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
        mode = self.provider.structured_output
        system = request.system
        if mode != "json_schema":
            system = f"{system}\n\n{schema_instruction(request)}".strip()
        messages = [{"role": "system", "content": system}] if system else []
        messages += request.messages()
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if mode == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.schema,
                    "strict": False,
                },
            }
        elif mode == "json_object":
            payload["response_format"] = {"type": "json_object"}
        return payload

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
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        completion_tokens = int(usage.get("completion_tokens", 0))
        return Completion(
            content=content,
            model=str(body.get("model") or request.model),
            usage=TokenUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=int(usage.get("total_tokens", prompt_tokens + completion_tokens)),
            ),
            latency_ms=latency_ms,
        )
