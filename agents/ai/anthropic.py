"""Client for Anthropic's Messages API (``POST {base_url}/messages``).

Structured output through tool use: the flow's schema becomes the ``input_schema`` of one tool
the model is made to call (``tool_choice``), and the tool call's ``input`` is the answer. A
server that answers with text instead is still accepted: the text is validated like any other
answer. The key goes in ``x-api-key`` with the ``anthropic-version`` header the API requires.
"""

from __future__ import annotations

from typing import Any

import orjson

from agents.ai.http_client import HttpChatClient
from agents.ai.provider import ChatRequest

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicMessages(HttpChatClient):
    path = "/messages"
    response_kind = "messages response"

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self.provider.api_key is not None:
            headers["x-api-key"] = self.provider.api_key.get_secret_value()
        return headers

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "messages": request.messages(),
            "tools": [
                {
                    "name": request.schema_name,
                    "description": "Record the answer.",
                    "input_schema": request.schema,
                }
            ],
            "tool_choice": {"type": "tool", "name": request.schema_name},
        }
        if request.system:
            payload["system"] = request.system
        return payload

    @staticmethod
    def answer_text(body: Any) -> str:
        """The tool call's input as JSON text, else the text blocks joined."""
        blocks = body["content"]
        if not isinstance(blocks, list):
            raise TypeError("content is not a list")
        for block in blocks:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                return orjson.dumps(block.get("input")).decode()
        texts = [
            b["text"]
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
        if not texts:
            raise TypeError("no tool_use or text block")
        return "".join(texts)

    def token_usage(self, body: Any) -> tuple[int, int]:
        usage = body.get("usage") or {}
        return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
