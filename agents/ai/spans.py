"""A model call as an OpenTelemetry span, when spans are on (:mod:`streams.metrics.tracing`).

``chat <model>`` (kind client), a child of the AI stage's span, with the GenAI semantic
conventions: ``gen_ai.operation.name`` (``chat``), ``gen_ai.system`` and
``gen_ai.provider.name`` (the provider's kind: ``openai``, ``anthropic``),
``gen_ai.request.model``, and once answered ``gen_ai.response.model``,
``gen_ai.usage.input_tokens`` / ``output_tokens`` as the provider counted them, and
``hookstream.cost_usd`` from the price table (0 without a price). A failed call's span has
``error.type`` and the status code of the answer when there was one. Its request's
``traceparent`` names this span (:mod:`agents.outbound.http`). Each call is one span: retries
and re-asks are spans of their own.
"""

from __future__ import annotations

from collections.abc import Callable

from agents.ai.provider import ChatClient, ChatRequest, Completion
from schemas.config_ai import ProviderConfig
from schemas.events import TokenUsage
from streams.metrics import tracing

Pricing = Callable[[str, str, TokenUsage], float]


async def complete(
    client: ChatClient, provider: ProviderConfig, request: ChatRequest, cost_usd: Pricing
) -> Completion:
    """``client.complete(request)``, in a ``chat`` span when spans are on. ``cost_usd``:
    the price of (requested model, answering model, usage)."""
    if not tracing.enabled():
        return await client.complete(request)
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": provider.kind,
        "gen_ai.provider.name": provider.kind,
        "gen_ai.request.model": request.model,
        "hookstream.provider": provider.name,
    }
    with tracing.span(f"chat {request.model}", kind="client", attributes=attributes):
        completion = await client.complete(request)
        usage = completion.usage
        tracing.set_attributes(
            {
                "gen_ai.response.model": completion.model,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "hookstream.cost_usd": cost_usd(request.model, completion.model, usage),
            }
        )
        return completion
