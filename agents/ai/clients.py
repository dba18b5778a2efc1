"""Picking the client for a provider's API (``kind``): the one place that knows them all."""

from __future__ import annotations

import aiohttp

from agents.ai.anthropic import AnthropicMessages
from agents.ai.openai import OpenAIChat
from agents.ai.provider import ChatClient
from agents.ai.responses import OpenAIResponses
from schemas.config_ai import ProviderConfig


def client_for(provider: ProviderConfig, session: aiohttp.ClientSession) -> ChatClient:
    """The client speaking ``provider``'s API: Anthropic Messages, OpenAI's Responses API or
    OpenAI chat completions."""
    if provider.kind == "anthropic":
        return AnthropicMessages(provider, session)
    if provider.api == "responses":
        return OpenAIResponses(provider, session)
    return OpenAIChat(provider, session)
