"""Client for OpenAI-compatible ``/v1/chat/completions`` (OpenAI, vLLM, Ollama, LiteLLM...).

Structured output as the provider's ``structured_output`` says: ``json_schema`` (capable servers
constrain the answer), ``json_object`` (JSON mode) or ``instruction`` (the schema in the system
prompt). The answer is validated by :mod:`agents.ai.output` either way, since not every server
honours the schema.
"""

from __future__ import annotations

from typing import Any

from agents.ai.http_client import HttpChatClient
from agents.ai.provider import ChatRequest, schema_instruction


class OpenAIChat(HttpChatClient):
    path = "/chat/completions"
    response_kind = "completion response"

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

    def answer_text(self, body: Any) -> str:
        content = body["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise TypeError("content is not a string")
        return content

    def token_usage(self, body: Any) -> tuple[int, int]:
        usage = body.get("usage") or {}
        return int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
