"""A flow's AI task: render the prompt, call the provider, validate the answer, retry.

Retries cover 429 (after the provider's Retry-After), 5xx, timeouts, connection errors and
answers that do not fit the schema; after ``max_attempts`` the caller dead-letters the event.
"""

from __future__ import annotations

from typing import Any

from agents.ai.openai import ChatRequest, OpenAIChat
from agents.ai.output import compile_schema, parse_output
from agents.retry import RetryPolicy, with_retries
from schemas import templates
from schemas.config import FlowConfig, ProviderConfig, WorkerSettings
from schemas.events import AIResult, EnrichedEvent


class AITask:
    def __init__(self, flow: FlowConfig, provider: ProviderConfig, worker: WorkerSettings) -> None:
        self.flow = flow
        self.provider = provider
        self.system = templates.parse(flow.ai.system)
        self.prompt = templates.parse(flow.ai.prompt)
        self.output_model = compile_schema(flow.name, flow.ai.output)
        self.policy = RetryPolicy(
            max_attempts=flow.ai.max_attempts,
            backoff_s=worker.retry_backoff_s,
            backoff_max_s=worker.retry_backoff_max_s,
        )

    def request_for(self, enriched: EnrichedEvent) -> ChatRequest:
        context: dict[str, Any] = {
            "event": enriched.event.model_dump(mode="json"),
            "data": enriched.event.data,
            "enrichment": enriched.enrichment,
        }
        return ChatRequest(
            model=self.flow.ai.model or self.provider.model,
            system=templates.render_text(self.system, context),
            prompt=templates.render_text(self.prompt, context),
            schema_name=self.flow.name.replace("-", "_"),
            schema=self.flow.ai.output,
            temperature=self.flow.ai.temperature,
            max_tokens=self.flow.ai.max_tokens,
        )

    async def run(self, enriched: EnrichedEvent, client: OpenAIChat) -> AIResult:
        request = self.request_for(enriched)

        async def attempt(_: int) -> tuple[dict[str, Any], Any]:
            completion = await client.complete(request)
            return parse_output(self.output_model, completion.content), completion

        (output, completion), attempts = await with_retries(
            attempt, self.policy, what=f"flow {self.flow.name} AI call"
        )
        return AIResult(
            flow=self.flow.name,
            event=enriched.event,
            enrichment=enriched.enrichment,
            provider=self.provider.name,
            model=completion.model,
            output=output,
            usage=completion.usage,
            latency_ms=completion.latency_ms,
            attempts=attempts,
        )
